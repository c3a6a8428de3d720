"""Every Batch API endpoint through the gateway (issue 22, items 1–2), driven by the official
`openai` SDK over real nsqd, the simulator and a real caller: bodies reach the upstream
whole, answers come back as it sent them and parse as the SDK's types, the public
example files run verbatim, and an upstream that cannot serve an endpoint fails the
batch at `validating` with one error naming it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from gpt4batch.common.nsq.admin import NsqdAdmin
from gpt4batch.common.nsq.callers import fleet_concurrency, read_callers
from tests.gateway.test_openai_sdk import (
    TERMINAL,
    Gateway,
    jsonl,
    lines_of,
    start_caller,
    upload,
    wait_status,
)
from tests.support.mock_upstream import MockUpstream
from tests.support.pipeline import ServiceProcs, wait_for

FIXTURES = Path(__file__).parent.parent / "fixtures" / "batch-api"
COOKBOOK = FIXTURES / "openai_cookbook_nightly_support_qa_batch.jsonl"
VLLM = FIXTURES / "vllm_openai_example_batch.jsonl"

#: The SDK's type of a successful line's `response.body`, by endpoint.
TYPES: dict[str, Any] = {
    "/v1/responses": Response,
    "/v1/embeddings": CreateEmbeddingResponse,
    "/v1/completions": Completion,
    "/v1/chat/completions": ChatCompletion,
}

#: A body per endpoint that uses fields the old chat conversion dropped.
BODIES: dict[str, dict[str, Any]] = {
    "/v1/responses": {"model": "gpt-5-nano", "input": "Where is O-{i}?", "seed": 3,
                      "reasoning": {"effort": "low"}, "metadata": {"line": "{i}"}},
    "/v1/embeddings": {"model": "text-embedding-3-small", "input": ["a{i}", "b{i}"],
                       "dimensions": 6},
    "/v1/completions": {"model": "gpt-3.5-turbo-instruct", "prompt": "Once {i}", "n": 2},
    "/v1/chat/completions": {"model": "gpt-4o-mini", "n": 2, "seed": 1,
                             "response_format": {"type": "json_object"},
                             "tools": [{"type": "function", "function": {"name": "f"}}],
                             "messages": [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "Q{i}"}]},
}  # fmt: skip


def requests(endpoint: str, n: int) -> list[dict[str, Any]]:
    template = json.dumps(BODIES[endpoint])
    return [
        {"custom_id": f"r{i}", "method": "POST", "url": endpoint,
         "body": json.loads(template.replace("{i}", str(i)))}
        for i in range(n)
    ]  # fmt: skip


def run_batch(client: OpenAI, procs: ServiceProcs, data: bytes, endpoint: str) -> Any:
    batch = client.batches.create(
        input_file_id=upload(client, data),
        endpoint=endpoint,
        completion_window="24h",  # type: ignore[arg-type]
    )
    return wait_status(client, batch.id, TERMINAL, procs, 120)


def wait_registered(nsqd: Any, prefix: str, kind: str) -> None:
    """Until a caller of `kind` is registered on nsqd (the gateway reads it at validating)."""
    admin = NsqdAdmin([nsqd.tcp_address], [nsqd.http_address])

    def registered() -> bool:
        found = asyncio.run(read_callers(admin, prefix)) or []
        return any(c.kind == kind for c in found)

    wait_for(registered, 30, f"a {kind} caller registered on nsqd")


@pytest.mark.parametrize("endpoint", list(TYPES))
def test_each_endpoint_passes_the_body_whole_and_returns_the_upstreams_answer(
    procs: ServiceProcs, tmp_path: Path, endpoint: str
) -> None:
    lines = requests(endpoint, 4)
    with MockUpstream("--seed", "22") as mock:
        client = Gateway(procs, tmp_path / "gw").start().client()
        start_caller(procs, mock)
        done = run_batch(client, procs, jsonl(lines), endpoint)
        mock_stats = mock.stats()
    assert done.status == "completed", done
    output = lines_of(client, done.output_file_id)
    assert [x["custom_id"] for x in output] == [x["custom_id"] for x in lines]
    texts = client.files.content(done.output_file_id).text.splitlines()
    for line, request, text in zip(output, lines, texts, strict=True):
        body = line["response"]["body"]
        # the body is the bytes the simulator sent (its compact JSON), not written again
        sent = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        assert text.endswith(f'"body": {sent}}}, "error": null}}'), text[:300]
        parsed = TYPES[endpoint].model_validate(body)  # the SDK's own type
        assert body.get("usage"), line
        if endpoint == "/v1/responses":
            assert parsed.metadata == request["body"]["metadata"]  # every field went along
            assert request["body"]["input"] in parsed.output_text
            assert parsed.usage.output_tokens_details.reasoning_tokens > 0
        elif endpoint == "/v1/embeddings":
            assert [len(d.embedding) for d in parsed.data] == [6, 6]
            assert set(body["usage"]) == {"prompt_tokens", "total_tokens"}
        else:
            assert len(parsed.choices) == 2  # n went along
        assert "message_id" not in body  # nothing of ours added to the upstream's answer
    assert mock_stats["calls"].get(endpoint.removeprefix("/v1/").replace("/", ".")) == 4


def test_the_cookbook_and_vllm_files_run_verbatim(
    procs: ServiceProcs, tmp_path: Path, nsqd: Any, topic_prefix: str
) -> None:
    with MockUpstream("--seed", "22") as mock:
        client = Gateway(procs, tmp_path / "gw").start().client()
        start_caller(procs, mock)
        wait_registered(nsqd, topic_prefix, "openai")
        cookbook = run_batch(client, procs, COOKBOOK.read_bytes(), "/v1/responses")
        vllm = run_batch(client, procs, VLLM.read_bytes(), "/v1/chat/completions")
    assert (cookbook.status, cookbook.request_counts.completed) == ("completed", 10), cookbook
    assert (vllm.status, vllm.request_counts.completed) == ("completed", 2), vllm
    answers = lines_of(client, cookbook.output_file_id)
    assert [x["custom_id"] for x in answers] == [f"qa-T-{i:03d}" for i in range(1, 11)]
    for line in answers:
        response = Response.model_validate(line["response"]["body"])
        assert response.instructions.startswith("Return concise internal support QA tags")
        assert response.usage is not None and response.usage.output_tokens <= 160
    for line in lines_of(client, vllm.output_file_id):
        completion = ChatCompletion.model_validate(line["response"]["body"])
        assert "turns=2" in (completion.choices[0].message.content or "")  # system + user


def test_a_chat_only_upstream_fails_other_endpoints_at_validating_naming_them(
    procs: ServiceProcs, tmp_path: Path, nsqd: Any, topic_prefix: str
) -> None:
    with MockUpstream("--seed", "22") as mock:
        client = Gateway(procs, tmp_path / "gw").start().client()
        procs.start(
            "caller", "caller", "--upstream", "gpt4api", "--base-url", mock.url,
            "--access-token", mock.token, "--qps", "0", "--retries", "0", "--concurrency", "7",
        )  # fmt: skip
        wait_registered(nsqd, topic_prefix, "gpt4api")
        admin = NsqdAdmin([nsqd.tcp_address], [nsqd.http_address])
        assert fleet_concurrency(asyncio.run(read_callers(admin, topic_prefix)) or []) == 7
        failed = run_batch(client, procs, jsonl(requests("/v1/embeddings", 3)), "/v1/embeddings")
        chat = run_batch(client, procs, VLLM.read_bytes(), "/v1/chat/completions")
        calls = mock.stats()["calls"]
    assert failed.status == "failed" and failed.failed_at, failed
    assert failed.errors is not None
    [error] = failed.errors.data  # one error for the batch, not one per line
    assert error.code == "unsupported_endpoint" and error.param == "endpoint"
    assert "/v1/embeddings" in (error.message or "") and "gpt4api" in (error.message or "")
    assert failed.output_file_id is None and not calls.get("embeddings")
    # chat still runs on it, converted into its asks (the system prompt as a transcript)
    assert chat.status == "completed" and chat.request_counts.completed == 2, chat
    for line in lines_of(client, chat.output_file_id):
        ChatCompletion.model_validate(line["response"]["body"])


def test_upstream_endpoints_says_what_the_fleet_serves_without_asking_nsqd(
    procs: ServiceProcs, tmp_path: Path
) -> None:
    gateway = Gateway(procs, tmp_path / "gw", "--upstream-endpoints", "/v1/chat/completions")
    client = gateway.start().client()  # no caller at all: the option alone decides
    refused = run_batch(client, procs, COOKBOOK.read_bytes(), "/v1/responses")
    assert refused.status == "failed" and refused.errors is not None
    [error] = refused.errors.data
    assert (error.code, error.line) == ("unsupported_endpoint", None)
    assert "/v1/responses" in (error.message or "")
    assert "--upstream-endpoints" in (error.message or "")
    # chat is served, and checked as a chat-only upstream takes it: the last message a user's
    last_assistant = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                      "body": {"model": "m", "messages": [{"role": "assistant",
                                                           "content": "x"}]}}  # fmt: skip
    bad = run_batch(client, procs, jsonl([last_assistant]), "/v1/chat/completions")
    assert bad.status == "failed" and bad.errors is not None
    assert [(e.code, e.line) for e in bad.errors.data] == [("invalid_message", 1)]
