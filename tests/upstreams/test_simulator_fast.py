"""`mock-upstream --fast`: the same chat simulation on the load-generator path."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import httpx

from gpt4batch.common.upstreams import ConversationState, Gpt4ApiClient, UpstreamConfig
from gpt4batch.common.upstreams.transport import UpstreamHttp
from tests.support.mock_upstream import MockUpstream
from tests.upstreams._helpers import run


def test_fast_path_chains_conversations_and_counts_like_the_full_simulator() -> None:
    with MockUpstream("--fast") as mock:

        async def go(http: httpx.AsyncClient) -> list[dict[str, Any]]:
            config = UpstreamConfig(base_url=mock.url, access_token=mock.token)
            client = Gpt4ApiClient(config, http)
            state, answers = ConversationState(), []
            for text in ("one", "two", "three"):
                answer = await client.chat(text, state)
                state = ConversationState(answer["conversation_id"], answer["message_id"])
                answers.append(answer)
            return answers

        answers = run(go)

        async def fast(http: httpx.AsyncClient) -> int:  # the caller's own client too
            async with UpstreamHttp(4) as upstream:
                reply = await upstream.json_call(
                    "chat", "POST", f"{mock.url}/standard/all-tools",
                    headers=mock.headers, timeout=httpx.Timeout(5.0), body={"message": "hi"},
                )  # fmt: skip
                return reply.status

        assert run(fast) == 200
        unauthorized = httpx.post(f"{mock.url}/standard/all-tools", json={"message": "x"})
        elsewhere = httpx.post(f"{mock.url}/standard/uploaded", headers=mock.headers)
        stats = mock.stats()
    assert len({a["conversation_id"] for a in answers}) == 1
    assert all(a["message_id"] for a in answers)
    assert unauthorized.status_code == 401
    assert elsewhere.status_code == 404 and "--fast" in elsewhere.json()["detail"]
    assert stats["total_calls"] == 5 and stats["chain_errors"] == 0
    assert stats["unauthorized"] == 1 and stats["in_flight"] == 0


def test_fast_path_refuses_fault_injection() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gpt4batch.services.mock_upstream", "--port", "0", "--fast",
         "--fault-5xx", "0.1"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--fast injects no faults" in result.stderr
