"""What the fleet's callers serve (common/nsq/callers.py) and what the gateway makes of it
(services/gateway/serving.py), without NSQ: the registration's user agent read back, the
fleet's concurrency, the endpoints every caller serves, and the override."""

from __future__ import annotations

import pytest

from gpt4batch.common.endpoints import ALL, CHAT, parse_endpoints
from gpt4batch.common.nsq.callers import CallerInfo, fleet_concurrency, parse_agent
from gpt4batch.services.caller.registry import served_endpoints
from gpt4batch.services.gateway.serving import from_callers, from_override


def caller(id_: str, kind: str, concurrency: int = 10, limit: str = "process") -> CallerInfo:
    kinds = kind.split("+")
    return CallerInfo(id_, kind, concurrency, served_endpoints(kinds), limit)


def test_a_registration_reads_back_as_it_was_made() -> None:
    me = caller("host-1-abc", "openai", 60, "fleet:acct.1")
    assert parse_agent(me.id, me.agent()) == me
    assert parse_agent("", me.agent()) is None  # no client id: nobody
    assert parse_agent("x", "gpt4batch-limiter qps=1 concurrency=2 tpm=0") is None


def test_the_fleets_concurrency_counts_a_limit_group_once() -> None:
    fleet = [
        caller("a", "openai", 10),
        caller("b", "openai", 5),
        caller("c", "openai", 40, "fleet:g"),  # c and d share 40 (the smaller of theirs)
        caller("d", "openai", 50, "fleet:g"),
    ]
    assert fleet_concurrency(fleet) == 10 + 5 + 40
    assert fleet_concurrency([]) == 0


def test_an_endpoint_is_served_when_every_caller_serves_it() -> None:
    openai_only = from_callers([caller("a", "openai"), caller("b", "openai")])
    assert openai_only.endpoints == frozenset(ALL) and not openai_only.converts_chat
    mixed = from_callers([caller("a", "openai"), caller("b", "gpt4api")])
    assert mixed.endpoints == frozenset({CHAT}) and mixed.converts_chat
    refusal = mixed.refusal("/v1/embeddings")
    assert refusal is not None and "/v1/embeddings" in refusal and "gpt4api" in refusal
    assert mixed.refusal(CHAT) is None
    nobody = from_callers([])
    assert nobody.endpoints is None and nobody.refusal("/v1/responses") is None


def test_a_caller_with_accounts_of_two_kinds_serves_what_both_serve() -> None:
    assert served_endpoints(["openai", "chatgpt-service"]) == (CHAT,)
    assert served_endpoints(["openai"]) == ALL


def test_the_override_names_endpoints_and_chat_alone_is_a_chat_only_upstream() -> None:
    assert from_override((CHAT,)).converts_chat
    assert not from_override(parse_endpoints(["chat/completions", "/v1/embeddings"])).converts_chat
    with pytest.raises(ValueError, match="/v1/moderations"):
        parse_endpoints(["/v1/moderations"])
