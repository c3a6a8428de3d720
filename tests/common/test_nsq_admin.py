"""Where each nsqd's HTTP API is: --nsqd-http-address, else what nsqlookupd lists for that
TCP address, else TCP port + 1 (issue 19 item 1)."""

from __future__ import annotations

import asyncio

import httpx

from gpt4batch.common.nsq.admin import NsqdNode, find_nodes


def lookupd(*producers: tuple[int, int], up: bool = True) -> httpx.AsyncClient:
    def answer(request: httpx.Request) -> httpx.Response:
        if not up:
            raise httpx.ConnectError("refused", request=request)
        nodes = [
            {"broadcast_address": "h", "tcp_port": tcp, "http_port": http}
            for tcp, http in producers
        ]
        return httpx.Response(200, json={"producers": nodes})

    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


def nodes(client: httpx.AsyncClient, tcp: list[str], http: list[str]) -> tuple[list, list]:
    async def go() -> tuple[list, list]:
        async with client:
            return await find_nodes(client, tcp, http, ["l:4161"])

    return asyncio.run(go())


def test_the_given_http_address_pairs_with_the_tcp_address_at_its_position() -> None:
    found, problems = nodes(lookupd((1, 9)), ["h:1", "h:5"], ["h:7", "h:8"])
    assert found == [NsqdNode("h:1", "h:7"), NsqdNode("h:5", "h:8")] and problems == []


def test_nsqlookupd_s_listing_beats_the_tcp_port_plus_one_guess() -> None:
    found, _ = nodes(lookupd((1, 9), (3, 4)), ["h:1"], [])
    assert found == [NsqdNode("h:1", "h:9"), NsqdNode("h:3", "h:4")]


def test_without_nsqlookupd_the_guess_is_marked_and_the_failure_reported() -> None:
    found, problems = nodes(lookupd(up=False), ["h:1"], [])
    assert found == [NsqdNode("h:1", "h:2", guessed=True)]
    assert len(problems) == 1 and "l:4161" in problems[0]
