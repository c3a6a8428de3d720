"""Export the JSON Schemas of the NSQ message bodies and of an input line (`schemas/*.json`).

Other systems publish AskMessages straight to our topic; these files are their
contract. `InputRecord.json` is one line of an input file (docs/input-format.md).
`python -m gpt4batch.common.schemas --write schemas` regenerates them; a test
fails when the checked-in files drift from the models.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gpt4batch.common.messages import MESSAGE_MODELS, SCHEMA_VERSION


def schema_documents() -> dict[str, dict[str, Any]]:
    """File name → JSON Schema document, for every message body."""
    documents = {}
    for model in MESSAGE_MODELS:
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"gpt4batch/v{SCHEMA_VERSION}/{model.__name__}.json"
        documents[f"{model.__name__}.json"] = schema
    from gpt4batch.services.ingest.input_schema import input_record_schema

    documents["InputRecord.json"] = input_record_schema()
    return documents


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="DIR", required=True, help="folder to write into")
    args = parser.parse_args(argv)
    folder = Path(args.write)
    folder.mkdir(parents=True, exist_ok=True)
    for name, schema in schema_documents().items():
        (folder / name).write_text(render(schema), encoding="utf-8")
        print(folder / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
