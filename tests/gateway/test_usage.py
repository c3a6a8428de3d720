"""The Batch API gateway's batch carries the batch's usage totals (issue 21): tokens as the
upstream reported them and their cost at the caller's prices, over real nsqd, a real
caller and the simulator, read with the official `openai` SDK."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

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


def test_the_batch_usage_is_the_sum_of_its_lines_for_responses_and_embeddings(
    procs: ServiceProcs, tmp_path: Path
) -> None:
    """Responses usage (`input_tokens`, `output_tokens` and their details: some prompts are
    long enough to be reported cached, reasoning is asked for) and embeddings usage
    (`prompt_tokens` only) are summed into the batch's usage as the real API reports it."""

    def line(i: int, url: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"custom_id": f"r{i}", "method": "POST", "url": url, "body": body}

    responses = [
        line(i, "/v1/responses", {"model": "m", "input": "word " * (3000 * (i % 2) + 5),
                                  "reasoning": {"effort": "low"}})
        for i in range(6)
    ]  # fmt: skip
    embeddings = [
        line(i, "/v1/embeddings", {"model": "e", "input": ["x " * i, "y"]}) for i in range(5)
    ]
    with MockUpstream("--seed", "22") as mock:
        gateway = Gateway(procs, tmp_path / "gw").start()
        start_caller(procs, mock)
        client = gateway.client()
        done = {}
        for url, lines in (("/v1/responses", responses), ("/v1/embeddings", embeddings)):
            batch = client.batches.create(
                input_file_id=upload(client, jsonl(lines)),
                endpoint=url,  # type: ignore[arg-type]
                completion_window="24h",
            )
            done[url] = wait_status(client, batch.id, TERMINAL, procs, 90)
    for url, batch in done.items():
        assert batch.status == "completed", batch
        reported = [x["response"]["body"]["usage"] for x in lines_of(client, batch.output_file_id)]
        usage = batch.usage
        assert usage is not None
        if url == "/v1/responses":
            assert usage.input_tokens == sum(u["input_tokens"] for u in reported)
            assert usage.output_tokens == sum(u["output_tokens"] for u in reported)
            cached = sum(u["input_tokens_details"]["cached_tokens"] for u in reported)
            reasoning = sum(u["output_tokens_details"]["reasoning_tokens"] for u in reported)
            assert cached > 0 and reasoning > 0  # the details are really summed, not 0
        else:
            assert usage.input_tokens == sum(u["prompt_tokens"] for u in reported) > 0
            assert usage.output_tokens == 0
            cached = reasoning = 0
        assert usage.input_tokens_details.cached_tokens == cached
        assert usage.output_tokens_details.reasoning_tokens == reasoning
        assert usage.total_tokens == usage.input_tokens + usage.output_tokens
        assert usage.model_dump()["estimated"] is False
