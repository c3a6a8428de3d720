"""Count the walks traced by walk.py (docs/architecture.md, issue 20's closing note).

    python tools/arch_walk/report.py DIR/<walk> [--flows]

Window: from the first to the last moment any traced process held the record (the first
sighting of the marker in an argument, a return value or a write, to the last one).
Start-up before it and shut-down after it are left out.

- touched on the record's behalf: the project's modules (common/, services/, cli/; not the
  simulator) that ran code in the window while a frame up the stack (awaiting coroutines
  included) held the record's data in a local: the record's own path with every helper it
  called (retry, limits, metrics, logging, settings), without the processes' background
  work (timers, polls);
- touched in the window: any code of the module ran in the window, in any traced process
  (background work included); `whole`: the same over the processes' whole lives.
- holders: modules a function of which received the record's data (as an argument or as the
  value a call returned to it), returned/yielded it, or sent it out of the process.
- carriers (the doc's "hops"): holders that hand the record's data on: to a function of
  another carrier module (as its argument, or as the value returned to it), or out of the
  process (pynsq/tornado, aiohttp/httpx, a worker thread, a write to a file). A holder that
  only takes the record and gives back none of it, or gives it only to such helpers (token
  counts, usage, prices, metrics, logs), is a side helper.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

TRANSPORTS = (
    "nsq.", "tornado.", "aiohttp.", "httpx.", "asyncio.threads", "concurrent.futures", "(write)",
)  # fmt: skip


def load(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.trace.json"))]


def analyse(traces: list[dict[str, Any]]) -> dict[str, Any]:
    flows = [(t["argv"][0], *f) for t in traces for f in t["flows"]]
    t0 = min(f[5] for f in flows)
    t1 = max(f[6] for f in flows)
    lo, hi = math.floor(t0 * 1000), math.ceil(t1 * 1000)
    touched: set[str] = set()
    whole: set[str] = set()
    behalf: set[str] = set()
    for t in traces:
        for module, buckets in t["touched"].items():
            whole.add(module)
            if any(lo <= b <= hi for b in buckets):
                touched.add(module)
        for module, buckets in t["behalf"].items():
            if any(lo <= b <= hi for b in buckets):
                behalf.add(module)
    first: dict[str, float] = {}
    funcs: dict[str, list[str]] = defaultdict(list)
    onward: dict[str, set[str]] = defaultdict(set)

    def holds(module: str, func: str, start: float) -> None:
        first[module] = min(first.get(module, start), start)
        if func not in funcs[module]:
            funcs[module].append(func)

    for _proc, module, func, kind, other, start, _end, _n in flows:
        if kind in ("arg", "ret") or (kind == "to-library" and other.startswith(TRANSPORTS)):
            holds(module, func, start)
        if kind == "ret" and other != "outside":  # `other` got the record as a return value
            holds(other, "(a value returned to it)", start)
        if kind == "arg" and other not in (module, "outside"):
            onward[other].add(module)  # `other` called into `module` with the record
        elif kind == "ret" and other not in (module, "outside"):
            onward[module].add(other)  # `module` gave it back to `other`
        elif kind == "to-library" and other.startswith(TRANSPORTS):
            onward[module].add(other if other.startswith("(") else f"({other})")
    holders = sorted(first, key=lambda m: first[m])
    # A carrier hands the record to a transport or to another carrier: drop, until none
    # changes, the holders that hand it only to side helpers (or to nobody).
    carriers = list(holders)
    while True:
        keep = [
            m
            for m in carriers
            if any(o.startswith("(") or o in carriers for o in onward.get(m, ()) if o != m)
        ]
        if keep == carriers:
            break
        carriers = keep
    return {
        "window_s": round(t1 - t0, 3),
        "touched": sorted(touched),
        "behalf": sorted(behalf),
        "whole": sorted(whole),
        "holders": holders,
        "carriers": carriers,
        "side_helpers": [m for m in holders if m not in carriers],
        "first": {m: round(first[m] - t0, 3) for m in holders},
        "funcs": dict(funcs),
        "onward": {m: sorted(v) for m, v in onward.items()},
        "flows": sorted(flows, key=lambda f: f[5]),
        "t0": t0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--flows", action="store_true", help="also every flow, in time order")
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    r = analyse(load(opts.folder))
    if opts.json:
        print(json.dumps({k: v for k, v in r.items() if k != "flows"}, indent=1))
        return
    print(f"{opts.folder}: window {r['window_s']} s")
    print(
        f"  modules touched: {len(r['behalf'])} on the record's behalf; {len(r['touched'])} in"
        f" the window; {len(r['whole'])} over the processes' lives"
    )
    print(f"  holders: {len(r['holders'])}, carriers (hops): {len(r['carriers'])}")
    print("  carriers in order of first contact (s after the first):")
    for m in r["carriers"]:
        names = ", ".join(r["funcs"][m][:4]) + (" …" if len(r["funcs"][m]) > 4 else "")
        print(f"    {r['first'][m]:7.3f} {m}: {names} -> {', '.join(r['onward'][m])}")
    print(f"  side helpers: {', '.join(r['side_helpers']) or '-'}")
    if opts.flows:
        for proc, module, func, kind, other, start, end, n in r["flows"]:
            print(
                f"    {start - r['t0']:8.3f} {end - r['t0']:8.3f} {int(n):4d} {proc[-28:]:28s} "
                f"{kind:10s} {module}:{func} ~ {other}"
            )


if __name__ == "__main__":
    main()
