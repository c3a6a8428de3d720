"""`gpt4batch export OUT.jsonl --format text|csv|md`: an output a person reads or a
spreadsheet opens.

One row per ask: the record id, the ask id, the question, the answer's text
(for every upstream's answer shape, `common/answer_text.py`), the files (the
ask's uploads, then the files its answer downloaded) and the error. A record
that failed at its third ask has its error on that ask's row and on the rows
of the asks never asked. The output is read line by line (bounded memory).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from gpt4batch.common.answer_text import answer_text
from gpt4batch.common.settings import CliParser

COLUMNS = ("id", "ask_id", "question", "answer", "files", "error")

Row = dict[str, str]


def build_parser() -> CliParser:
    p = CliParser(
        prog="gpt4batch export",
        description="Turn a run's output into one row per ask: id, ask id, question, answer "
        "text, files, error.",
    )
    p.add_argument("output", metavar="OUT.jsonl", help="an output of `gpt4batch run` or `sink`")
    p.add_argument(
        "--format",
        choices=["text", "csv", "md"],
        default="text",
        help="text (blocks to read), csv (a spreadsheet) or md (a Markdown table) (default: text)",
    )
    p.add_argument(
        "-o", "--out", metavar="FILE", default=None, help="write here (default: standard output)"
    )
    return p


def _error(record: dict[str, Any]) -> str:
    err = record.get("iErr")
    if not isinstance(err, dict):
        return ""
    return f"{err.get('code')} {err.get('message') or ''}".strip()


def _ask_files(ask: dict[str, Any]) -> list[str]:
    files: list[str] = []
    for key in ("images", "image", "files"):
        value = ask.get(key)
        if isinstance(value, str):
            files.append(value)
        elif isinstance(value, list):
            files += [v for v in value if isinstance(v, str)]
    return files


def _downloaded(answer: Any) -> list[str]:
    specs = answer.get("spec_downloads") if isinstance(answer, dict) else None
    return [
        s["local"] for s in specs or [] if isinstance(s, dict) and isinstance(s.get("local"), str)
    ]


def record_rows(record: dict[str, Any]) -> list[Row]:
    """The rows of one output record, one per ask (one row for a record without asks)."""
    rid = str(record.get("id", ""))
    asks = [a for a in record.get("asks") or [] if isinstance(a, dict)]
    given = record.get("answers")
    answers = given if isinstance(given, list) else []
    error = _error(record)
    rows = []
    for i, ask in enumerate(asks):
        answer = answers[i] if i < len(answers) else None
        rows.append(
            {
                "id": rid,
                "ask_id": str(ask.get("id", "")),
                "question": str(ask.get("content", "")),
                "answer": answer_text(answer),
                "files": ", ".join([*_ask_files(ask), *_downloaded(answer)]),
                "error": error if answer is None else "",
            }
        )
    if not rows:
        rows.append({**dict.fromkeys(COLUMNS, ""), "id": rid, "error": error})
    elif error and not any(row["error"] for row in rows):
        rows[-1]["error"] = error  # every ask answered, still failed (e.g. a download)
    return rows


def rows(path: Path) -> Iterator[Row]:
    with path.open("rb") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                print(
                    f"gpt4batch export: {path}:{number}: not a JSON record; skipped",
                    file=sys.stderr,
                )
                continue
            yield from record_rows(record)


def write_text(items: Iterator[Row], out: TextIO) -> None:
    for row in items:
        out.write(f"== {row['id']} / {row['ask_id']}\n")
        out.write(f"Q: {row['question']}\n")
        if row["answer"]:
            out.write(f"A: {row['answer']}\n")
        if row["files"]:
            out.write(f"files: {row['files']}\n")
        if row["error"]:
            out.write(f"error: {row['error']}\n")
        out.write("\n")


def write_csv(items: Iterator[Row], out: TextIO) -> None:
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(items)


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def write_md(items: Iterator[Row], out: TextIO) -> None:
    out.write("| " + " | ".join(COLUMNS) + " |\n")
    out.write("|" + "---|" * len(COLUMNS) + "\n")
    for row in items:
        out.write("| " + " | ".join(_cell(row[c]) for c in COLUMNS) + " |\n")


WRITERS = {"text": write_text, "csv": write_csv, "md": write_md}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    source = Path(args.output)
    if not source.is_file():
        what = "is a directory" if source.is_dir() else "does not exist"
        print(
            f"gpt4batch export: error: {source} {what}; give a run's output file", file=sys.stderr
        )
        return 2
    write = WRITERS[args.format]
    if args.out is None:
        try:
            write(rows(source), sys.stdout)
            sys.stdout.flush()
        except BrokenPipeError:  # `| head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    target = Path(args.out)
    if target.resolve() == source.resolve():
        print("gpt4batch export: error: -o must differ from the output read", file=sys.stderr)
        return 2
    try:
        with target.open("w", encoding="utf-8", newline="") as fh:
            write(rows(source), fh)
    except OSError as exc:
        print(f"gpt4batch export: error: cannot write {target}: {exc.strerror}", file=sys.stderr)
        return 2
    return 0
