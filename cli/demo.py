"""`gpt4batch demo`: the bundled example through the whole pipeline, against the simulator.

No account and no network are needed: the built-in simulator of gpt4api.plus
answers in-process. The example has a multi-turn conversation, an image, a
file, pictures to download and one bad line (rejected, reported, the batch
goes on).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from gpt4batch.cli.run.command import Run
from gpt4batch.cli.run.options import parse as parse_run
from gpt4batch.cli.run.report import print_summary
from gpt4batch.common import logging as glog
from gpt4batch.common.filenames import sibling
from gpt4batch.common.settings import CliParser
from gpt4batch.services.mock_upstream.app import serve
from gpt4batch.services.mock_upstream.options import Options

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DEMO_FILES = ("demo.jsonl", "1.jpeg", "example.txt")
TOKEN = "sk-demo"


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog="gpt4batch demo", description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=Path("demo-run"), help="where to put it all")
    p.add_argument("--examples", type=Path, default=EXAMPLES, help="folder with demo.jsonl")
    p.add_argument("--latency-ms", type=float, default=300, help="simulated upstream latency")
    return p


def prepare(workdir: Path, examples: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    for name in DEMO_FILES:
        source = examples / name
        if not source.exists():
            raise SystemExit(f"gpt4batch demo: {source} is missing (run from the repository)")
        shutil.copy(source, workdir / name)
    for old in workdir.glob("out*"):
        old.unlink()
    return workdir / "demo.jsonl"


def shorten(text: str, width: int) -> str:
    """`text` on one line, cut at a word boundary (never mid-word) with an ellipsis."""
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    cut = flat[: width - 1].rsplit(" ", 1)[0] if " " in flat[:width] else flat[: width - 1]
    return cut.rstrip(" ,;:.") + "…"


def show(out: Path, workdir: Path) -> None:
    print("\nWhat came back (the last answer of each record):")
    for line in out.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("iErr"):
            print(f"  {record['id']}: FAILED {record['iErr']['code']}: {record['iErr']['message']}")
            continue
        answers = record.get("answers") or []
        text = answers[-1]["contents"][-1]["message"]["content"]["parts"][0] if answers else ""
        print(f"  {record['id']}: {len(answers)} answer(s); last: {shorten(text, 70)}")
    pictures = sorted(p.name for p in workdir.glob("GPT4API_*"))
    if pictures:
        print("Downloaded pictures: " + ", ".join(pictures))
    rejects = sibling(out, "rejects.jsonl")
    print("(demo-5 fails on purpose: the image it names does not exist.)")
    print(f"\nLook at: {out} (one line per input line), {rejects}, and the pictures in {workdir}/")
    print(
        f"Next: `{command_name()} run --help`, and docs/mock-upstream.md for dry runs of your own"
    )
    print("files (docs/input-format.md says how to write them).")
    if command_name() != "gpt4batch":
        print(
            f"(gpt4batch is not on your PATH: run it as {command_name()}, or "
            "`source .venv/bin/activate`, or `pipx install .` / `pip install .` from the clone.)"
        )


def command_name() -> str:
    """How the user can type this program: `gpt4batch` when that is on PATH, else its path."""
    installed = Path(sys.executable).parent / "gpt4batch"
    on_path = shutil.which("gpt4batch")
    if on_path and (not installed.exists() or Path(on_path).resolve() == installed.resolve()):
        return "gpt4batch"
    try:
        return str(installed.relative_to(Path.cwd()))
    except ValueError:
        return str(installed)


async def demo(args: argparse.Namespace) -> int:
    source = prepare(args.workdir, args.examples)
    server, port = await serve(
        Options(host="127.0.0.1", port=0, token=TOKEN, latency_ms=args.latency_ms, seed=1)
    )
    url = f"http://127.0.0.1:{port}"
    print(f"simulator of gpt4api.plus listening on {url} (token {TOKEN})")
    out = args.workdir / "out.jsonl"
    opts = parse_run(
        ["-i", str(source), "-o", str(out), "-g", "4", "-q", "10", "--base-url", url,
         "--access-token", TOKEN, "--progress", "bar" if sys.stderr.isatty() else "log"]
    )  # fmt: skip
    run = Run(opts)
    result = await run.execute()
    server.stop()
    print_summary(run, result, sys.stdout, show_resume=False)
    show(out, args.workdir)
    return 0 if result.final.ok + 1 == result.final.total else 1  # the one bad line is on purpose


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Errors only: what a warning would say (the rejected line) is in the summary, and a
    # log line must not land in the middle of it.
    glog.configure("console", "error", service="demo")
    return asyncio.run(demo(args))
