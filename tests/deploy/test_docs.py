"""docs/metrics.md lists every metric; docs/deployment.md's examples are valid bodies."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import jsonschema
from prometheus_client import REGISTRY

from gpt4batch.common.nsq_exporter import _Families

ROOT = Path(__file__).resolve().parents[2]
METRIC_MODULES = [
    "gpt4batch.common.metrics",
    "gpt4batch.services.ingest.metrics",
    "gpt4batch.services.caller.metrics",
    "gpt4batch.services.caller.limits.metrics",
    "gpt4batch.services.downloader.metrics",
    "gpt4batch.services.sink.metrics",
    "gpt4batch.services.gateway.metrics",
]


def _exposed_names() -> set[str]:
    for module in METRIC_MODULES:
        importlib.import_module(module)
    names = {m.name for m in REGISTRY.collect() if m.name.startswith("gpt4batch_")}
    names |= {m.name for m in _Families().all()}
    # prometheus_client keeps counter family names without `_total`; the series have it.
    return {n + "_total" if not n.endswith("_total") and _is_counter(n) else n for n in names}


def _is_counter(name: str) -> bool:
    return any(
        m.name == name and m.type == "counter" for m in [*REGISTRY.collect(), *_Families().all()]
    )


def test_metrics_doc_lists_every_metric() -> None:
    doc = (ROOT / "docs/metrics.md").read_text()
    documented = set(re.findall(r"^\| `(gpt4batch_[a-z0-9_]+)` \|", doc, re.M))
    assert _exposed_names() - documented == set()


def test_deployment_examples_are_valid_against_the_message_schemas() -> None:
    doc = (ROOT / "docs/deployment.md").read_text()
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)\n```", doc, re.S)]
    schemas = {
        name: json.loads((ROOT / f"schemas/{name}.json").read_text())
        for name in ("AskMessage", "BatchManifest")
    }
    ask, manifest = blocks
    jsonschema.Draft202012Validator(schemas["AskMessage"]).validate(ask)
    jsonschema.Draft202012Validator(schemas["BatchManifest"]).validate(manifest)
    assert ask["batch"] == manifest["batch"]
