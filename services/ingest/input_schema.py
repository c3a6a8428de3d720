"""`schemas/InputRecord.json`: one line of an input file, as ingest accepts it.

The validator (validate.py) is the authority; this JSON Schema states its
structural rules for people and other tools (docs/input-format.md). What a
schema cannot see (a referenced file exists, an id is not repeated, the line's
size) is checked by ingest only.
"""

from __future__ import annotations

from typing import Any

from gpt4batch.services.ingest.validate import LINE_ID, MAX_ASKS

_TEXT = {"type": "string", "pattern": r"\S"}  # a non-blank string
_PATHS = {
    "description": "A path, or a list of paths, relative to the input file's folder.",
    "oneOf": [_TEXT, {"type": "array", "items": _TEXT}],
}


def input_record_schema() -> dict[str, Any]:
    """The JSON Schema of one input line."""
    ask = {
        "type": "object",
        "description": "One turn of the conversation; asks run in order, as one conversation.",
        "required": ["id", "content"],
        "properties": {
            "id": {**_TEXT, "description": "The ask's key (in logs and download names)."},
            "content": {**_TEXT, "description": "The question."},
            "images": {**_PATHS, "title": "Images to upload with this ask."},
            "image": {**_PATHS, "title": "The original README's spelling of images."},
            "files": {**_PATHS, "title": "Files to upload with this ask."},
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "gpt4batch/InputRecord.json",
        "title": "InputRecord",
        "description": "One line of an input JSONL file (docs/input-format.md). Other keys are "
        "kept as they are in the output line.",
        "type": "object",
        "required": ["id", "asks"],
        "properties": {
            "id": {
                **_TEXT,
                "not": {"pattern": f"^{LINE_ID.pattern}$"},
                "description": "The record's key, unique in the file (`line:N` is reserved).",
            },
            "asks": {"type": "array", "minItems": 1, "maxItems": MAX_ASKS, "items": ask},
            "answers": {
                "description": "null in an input; an output's answers (with -f/--fix, a "
                "record whose iErr is null and answers are set is kept, not run again).",
                "type": ["array", "null"],
                "items": {"type": "object"},
            },
            "iErr": {
                "description": "null, or a previous run's error (the record runs again with -f).",
                "oneOf": [
                    {"type": "null"},
                    {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {"type": "integer"},
                            "message": {"type": "string"},
                        },
                    },
                ],
            },
            "extra": {"description": "Anything: passed through to the output untouched."},
        },
    }
