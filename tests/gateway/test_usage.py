"""The Batch API gateway's batch carries the batch's usage totals (issue 21): tokens as the
upstream reported them and their cost at the caller's prices, over real nsqd, a real
caller and the simulator, read with the official `openai` SDK."""

from __future__ import annotations

import math
from pathlib import Path

from tests.gateway.test_openai_sdk import (
    TERMINAL,
    Gateway,
    create,
    jsonl,
    lines_of,
    request,
    start_caller,
    upload,
    wait_status,
)
from tests.support.mock_upstream import MockUpstream
from tests.support.pipeline import ServiceProcs


def test_the_batch_says_its_tokens_and_cost(procs: ServiceProcs, tmp_path: Path) -> None:
    with MockUpstream("--seed", "21") as mock:
        gateway = Gateway(procs, tmp_path / "gw").start()
        start_caller(procs, mock, "--input-usd-per-1m", "2", "--output-usd-per-1m", "8")
        client = gateway.client()
        file_id = upload(client, jsonl([request(f"q{i}", f"question {i}") for i in range(10)]))
        batch = create(client, file_id)
        done = wait_status(client, batch.id, TERMINAL, procs, 90)
        assert done.status == "completed", done
        output = lines_of(client, done.output_file_id)
    assert len(output) == 10
    reported = [line["response"]["body"]["usage"] for line in output]
    prompt = sum(u["prompt_tokens"] for u in reported)
    completion = sum(u["completion_tokens"] for u in reported)
    usage = done.usage
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens) == (prompt, completion)
    assert usage.total_tokens == prompt + completion
    extra = usage.model_dump()
    assert extra["estimated"] is False
    assert math.isclose(extra["cost_usd"], (prompt * 2 + completion * 8) / 1e6, rel_tol=1e-6)
