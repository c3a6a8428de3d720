"""`gpt4batch demo` (the README's first command) works from a clean folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_demo_runs_the_bundled_example(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "gpt4batch.cli", "demo", "--workdir", str(workdir),
         "--latency-ms", "0"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(x) for x in (workdir / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [f"demo-{i}" for i in range(1, 6)]
    assert [len(r["answers"] or []) for r in records] == [2, 1, 2, 3, 0]
    assert records[4]["iErr"]["code"] == 422
    assert len(list(workdir.glob("GPT4API_demo-3_*"))) == 2
    assert "4 ok, 1 failed" in result.stdout


def test_demo_summary_is_whole_and_answers_end_at_a_word(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "gpt4batch.cli", "demo", "--workdir", str(workdir),
         "--latency-ms", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:]
    lines = result.stdout.splitlines()
    assert not [line for line in lines if line.lstrip().startswith("{")]  # no JSON log line
    start = next(i for i, line in enumerate(lines) if line.startswith("gpt4batch run: finished"))
    block = lines[start + 1 : lines.index("", start)]
    assert block and all(line.startswith("  ") for line in block), block
    answers = {
        r["id"]: r["answers"][-1]["contents"][-1]["message"]["content"]["parts"][0]
        for r in map(json.loads, (workdir / "out.jsonl").read_text().splitlines())
        if r["answers"]
    }
    for line in lines:
        if "; last: " not in line:
            continue
        rid = line.split(":", 1)[0].strip()
        shown = line.split("; last: ", 1)[1]
        full = " ".join(answers[rid].split())
        if shown.endswith("…"):
            kept = shown[:-1]
            assert full.startswith(kept) and full[len(kept)] in " ,;:.", (shown, full)
        else:
            assert shown == full
