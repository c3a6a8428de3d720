"""`gpt4batch export`: one row per ask (id, ask id, question, answer text, files, error)
for every upstream's answer shape, from real runs against the simulator (issue 23)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpt4batch.common.answer_text import answer_text
from tests.cli.test_run import run_cmd, upstream
from tests.support.mock_upstream import MockUpstream


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    with MockUpstream("--seed", "9") as server:
        yield server


def export(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpt4batch.cli", "export", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60, encoding="utf-8",
    )  # fmt: skip


def write_batch(folder: Path) -> None:
    records = [
        {"id": "r1", "asks": [{"id": "a1", "content": "first | one"},
                              {"id": "a2", "content": "second\nline"}]},
        {"id": "r2", "asks": [{"id": "b1", "content": "please draw a cat"}]},
    ]  # fmt: skip
    (folder / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.mark.parametrize(
    ("kind", "path"),
    [("gpt4api", ""), ("openai", ""), ("chatgpt-service", "/chatgpt-service/chat")],
)
def test_export_csv_has_each_asks_answer_text_for_every_upstream(
    mock: MockUpstream, tmp_path: Path, kind: str, path: str
) -> None:
    write_batch(tmp_path)
    base = ["--base-url", mock.url + path] if path else []
    argv = ["-i", "in.jsonl", "-o", "out.jsonl", "--upstream", kind, "-e", "false"]
    r = run_cmd(tmp_path, *argv, *upstream(mock), *base)
    assert r.returncode == 0, r.stderr[-2000:]
    e = export(tmp_path, "out.jsonl", "--format", "csv")
    assert e.returncode == 0, e.stderr
    rows = list(csv.DictReader(io.StringIO(e.stdout)))
    assert [(row["id"], row["ask_id"]) for row in rows] == [
        ("r1", "a1"),
        ("r1", "a2"),
        ("r2", "b1"),
    ]
    assert [row["question"] for row in rows] == ["first | one", "second\nline", "please draw a cat"]
    for row in rows:
        assert row["answer"].startswith(f"Mock answer to: {row['question'][:5]}"), (kind, row)
        assert row["error"] == ""


def test_export_text_and_md_show_failures_and_files(mock: MockUpstream, tmp_path: Path) -> None:
    write_batch(tmp_path)
    with (tmp_path / "in.jsonl").open("a") as fh:
        fh.write('{"id": "bad", "asks": [{"id": "c1", "content": "x", "images": ["gone.png"]}]}\n')
    r = run_cmd(tmp_path, "-i", "in.jsonl", "-o", "out.jsonl", *upstream(mock))
    assert r.returncode == 1, r.stderr[-2000:]
    md = export(tmp_path, "out.jsonl", "--format", "md", "-o", "out.md")
    assert md.returncode == 0, md.stderr
    lines = (tmp_path / "out.md").read_text().splitlines()
    assert lines[0] == "| id | ask_id | question | answer | files | error |"
    assert len(lines) == 2 + 4  # header, rule, one row per ask
    assert "| first \\| one |" in lines[2] and "second<br>line" in lines[3]
    assert "GPT4API_" in lines[4]  # the picture the drawing ask downloaded
    assert lines[5].startswith("| bad | c1 | x |  | gone.png | 422 rejected by ingest")
    text = export(tmp_path, "out.jsonl")
    assert "== r2 / b1\nQ: please draw a cat\nA: Mock answer to: please draw a cat" in text.stdout
    assert "error: 422 rejected by ingest" in text.stdout


def test_export_mistakes_are_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = export(tmp_path, "nope.jsonl")
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        "gpt4batch export: error: nope.jsonl does not exist; give a run's output file"
    )
    assert export(tmp_path, "nope.jsonl", "--format", "xls").returncode == 2


def test_answer_text_reads_every_shape() -> None:
    gpt4api = {
        "contents": [
            {"message": {"author": {"role": "user"}, "content": {"parts": ["q"]}}},
            {"message": {"author": {"role": "assistant"}, "content": {"parts": ["hello"]}}},
        ]
    }
    assert answer_text(gpt4api) == "hello"
    assert answer_text({"choices": [{"message": {"content": "hi"}}]}) == "hi"
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert answer_text({"choices": [{"message": {"content": parts}}]}) == "a\nb"
    assert answer_text({"choices": [{"text": "completed"}]}) == "completed"
    assert answer_text({"code": 0, "data": {"response": "svc"}}) == "svc"
    assert answer_text(None) == "" and answer_text({"odd": 1}) == ""
