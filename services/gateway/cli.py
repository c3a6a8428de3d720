"""`gpt4batch gateway`: the OpenAI Batch API (files + batches) in front of the pipeline."""

from __future__ import annotations

from collections.abc import Sequence

from gpt4batch.common.service import run_app
from gpt4batch.services.gateway.service import build
from gpt4batch.services.gateway.settings import GatewaySettings

DESCRIPTION = (
    "Serve POST /v1/files, GET /v1/files/{id}[/content], POST/GET /v1/batches, "
    "GET /v1/batches/{id} and POST /v1/batches/{id}/cancel for the official openai SDK. "
    "Requests become asks on the asks topic; results come back on the gateway's own "
    "channel. Files and batch metadata live under --data-dir. With --webhook-url, each "
    "batch's end is POSTed there as a signed batch.* event."
)


def main(argv: Sequence[str] | None = None) -> int:
    return run_app("gateway", DESCRIPTION, GatewaySettings, build, argv)
