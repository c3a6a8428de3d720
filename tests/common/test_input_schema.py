"""schemas/InputRecord.json says what ingest accepts: every accepted example line validates,
and the structural mistakes ingest refuses are refused by the schema too."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from gpt4batch.services.ingest.reader import RawLine
from gpt4batch.services.ingest.validate import Accepted, Validator

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.jsonl"))


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((ROOT / "schemas/InputRecord.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _lines(path: Path) -> list[RawLine]:
    raw = path.read_bytes().splitlines()
    return [RawLine(n, data, len(data) + 1) for n, data in enumerate(raw, 1) if data.strip()]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_accepted_example_line_validates(
    path: Path, validator: jsonschema.Draft202012Validator
) -> None:
    ingest = Validator(source=path.name, base_dir=path.parent)
    accepted = [line for line in _lines(path) if isinstance(ingest.check(line), Accepted)]
    assert accepted, f"{path.name}: no line accepted"
    for line in accepted:
        assert line.data is not None
        errors = [e.message for e in validator.iter_errors(json.loads(line.data))]
        assert errors == [], f"{path.name}:{line.number}"


ASK = {"id": "a", "content": "hello"}


@pytest.mark.parametrize(
    "record",
    [
        {"asks": [ASK]},
        {"id": "", "asks": [ASK]},
        {"id": 7, "asks": [ASK]},
        {"id": "line:3", "asks": [ASK]},
        {"id": "r"},
        {"id": "r", "asks": []},
        {"id": "r", "asks": [ASK] * 101},
        {"id": "r", "asks": [{"id": "a"}]},
        {"id": "r", "asks": [{"id": "a", "content": "  "}]},
        {"id": "r", "asks": [{"content": "x"}]},
        {"id": "r", "asks": [{**ASK, "images": 3}]},
        {"id": "r", "asks": [{**ASK, "files": [""]}]},
        {"id": "r", "asks": [ASK], "iErr": {"code": "x"}},
    ],
    ids=lambda r: json.dumps(r)[:60],
)
def test_what_ingest_refuses_the_schema_refuses(
    record: dict, validator: jsonschema.Draft202012Validator
) -> None:
    ingest = Validator(source="t", base_dir=ROOT)
    verdict = ingest.check(RawLine(1, json.dumps(record).encode(), 0))
    assert not isinstance(verdict, Accepted)
    assert not validator.is_valid(record)


def test_the_original_spellings_are_valid(validator: jsonschema.Draft202012Validator) -> None:
    record = {
        "id": "r",
        "asks": [{"id": "a", "content": "x", "image": "1.jpeg"}, {**ASK, "files": ["b.txt"]}],
        "answers": None,
        "iErr": None,
        "extra": {"anything": [1, 2]},
        "mine": "kept",
    }
    assert validator.is_valid(record)
