"""Summarise py-spy collapsed stacks (`py-spy record --format raw`): where the samples go.

    .venv/bin/python bench/profile_top.py /tmp/prof/now-caller.txt [--top 25]

Prints the functions with the most samples on the stack (inclusive) and at
the top of it (self), as shares of all samples; idle samples (the event loop
waiting in select/epoll) are counted apart so the shares are of busy time.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>[^ ]+) \\((?P<file>[^:)]+)(?::\\d+)?\\)$")


def frame_name(frame: str) -> str:
    match = FRAME.match(frame)
    if not match:
        return frame
    file = match["file"]
    short = "/".join(file.split("/")[-2:])
    return f"{match['func']} ({short})"


def summarise(path: Path, top: int) -> str:
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    busy = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";")]
        if frames and ("select (selectors.py)" in frames[-1] or "poll" in frames[-1]):
            idle += count
            continue
        busy += count
        self_time[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    lines = [
        f"{path.name}: {busy} busy samples, {idle} idle ({busy / max(1, busy + idle):.0%} busy)"
    ]
    lines.append("  inclusive (share of busy):")
    for name, n in inclusive.most_common(top):
        lines.append(f"    {100 * n / max(1, busy):5.1f}%  {name}")
    lines.append("  self:")
    for name, n in self_time.most_common(top):
        lines.append(f"    {100 * n / max(1, busy):5.1f}%  {name}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    for path in args.files:
        print(summarise(path, args.top))


if __name__ == "__main__":
    main()
