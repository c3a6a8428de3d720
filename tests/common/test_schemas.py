"""The checked-in JSON Schemas are what other systems publish against: keep them true."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from gpt4batch.common.messages import AskMessage
from gpt4batch.common.schemas import render, schema_documents

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


@pytest.mark.parametrize("name", sorted(schema_documents()))
def test_checked_in_schema_matches_the_model(name: str) -> None:
    checked_in = SCHEMAS / name
    assert checked_in.exists(), f"{checked_in} missing: run `make schemas`"
    assert checked_in.read_text(encoding="utf-8") == render(schema_documents()[name]), (
        f"{name} drifted from the model: run `make schemas` and commit the result"
    )


def test_no_stale_schema_files() -> None:
    assert sorted(p.name for p in SCHEMAS.glob("*.json")) == sorted(schema_documents())


def test_a_hand_written_ask_validates_against_schema_and_model() -> None:
    body = {
        "v": 1,
        "batch": "from-another-system",
        "seq": 0,
        "record": {
            "id": "r1",
            "asks": [{"id": "a1", "content": "describe", "images": ["/data/a.jpg"]}],
            "extra": {"source": "crm"},
        },
    }
    schema = json.loads((SCHEMAS / "AskMessage.json").read_text())
    jsonschema.validate(body, schema)
    assert AskMessage.model_validate(body).record.asks[0].image_paths() == ["/data/a.jpg"]


def test_schema_rejects_unknown_version() -> None:
    schema = json.loads((SCHEMAS / "AskMessage.json").read_text())
    body = {"v": 2, "batch": "b", "seq": 0, "record": {"id": "r", "asks": []}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, schema)
