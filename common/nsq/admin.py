"""nsqd's and nsqlookupd's HTTP APIs, in one place: where each nsqd is (its TCP and HTTP
addresses), creating topics and channels, reading a channel's backlog.

Discovery may lag: nsqlookupd lists an nsqd a moment after the nsqd starts, and a
service may start before nsqd and nsqlookupd do. Like NSQ's own apps, nothing here
gives up on that: the `wait_*` methods retry with backoff and say once what they wait
for. An nsqd's HTTP address is, in this order: the `--nsqd-http-address` given at the
same position as its `--nsqd-tcp-address`, the one nsqlookupd lists for that TCP
address, else nsqd's default pairing (TCP port + 1), tried again each round so a node
nsqlookupd lists later is found.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from gpt4batch.common.errors import BusConnectError
from gpt4batch.common.logging import get_logger
from gpt4batch.common.retry import RetryPolicy
from gpt4batch.common.tls import client_context

log = get_logger("gpt4batch.nsq")

#: Waits between discovery rounds: from 0.1 s up to 5 s (full jitter), without end.
DISCOVERY = RetryPolicy(retries=1 << 62, base_delay=0.1, max_delay=5.0)

HTTP_HINT = "give --nsqd-http-address when nsqd's HTTP port is not its TCP port + 1"


@dataclass(frozen=True)
class NsqdNode:
    """One nsqd: where to publish (TCP) and where its HTTP API is."""

    tcp: str
    http: str
    guessed: bool = False
    """The HTTP address is nsqd's default pairing (TCP port + 1), not known."""


def http_url(address: str, path: str = "") -> str:
    """`address` (host:port, or a URL) as a URL, with `path` appended."""
    base = address if "://" in address else f"http://{address}"
    return base.rstrip("/") + path


def node_addresses(nodes: object, port: str, into: list[str]) -> list[str]:
    """Add `host:<port>` of every producer in an nsqlookupd `/nodes` answer to `into`.

    `port` is `tcp_port` (to publish) or `http_port` (for /stats).
    """
    producers = nodes.get("producers") if isinstance(nodes, dict) else None
    for p in producers or []:
        address = f"{p.get('broadcast_address') or p.get('hostname')}:{p[port]}"
        if address not in into:
            into.append(address)
    return into


async def find_nodes(
    client: httpx.AsyncClient,
    nsqd_tcp: Sequence[str],
    nsqd_http: Sequence[str],
    lookupd_http: Sequence[str],
) -> tuple[list[NsqdNode], list[str]]:
    """Every nsqd known now (nsqlookupd's `/nodes`, then the given addresses), and what
    could not be asked (one line per nsqlookupd that did not answer)."""
    nodes: dict[str, NsqdNode] = {}
    problems: list[str] = []
    for lookupd in lookupd_http:
        try:
            resp = await client.get(
                http_url(lookupd, "/nodes"), headers={"Accept": "application/json"}
            )
            resp.raise_for_status()
            tcp = node_addresses(resp.json(), "tcp_port", [])
            web = node_addresses(resp.json(), "http_port", [])
        except (httpx.HTTPError, ValueError, AttributeError, KeyError) as exc:
            problems.append(f"nsqlookupd {lookupd}: {exc or type(exc).__name__}")
            continue
        for t, h in zip(tcp, web, strict=False):
            nodes.setdefault(t, NsqdNode(t, h))
    for i, tcp_address in enumerate(nsqd_tcp):
        if i < len(nsqd_http):
            nodes[tcp_address] = NsqdNode(tcp_address, nsqd_http[i])
        elif tcp_address not in nodes:
            host, _, port = tcp_address.rpartition(":")
            nodes[tcp_address] = NsqdNode(tcp_address, f"{host}:{int(port) + 1}", guessed=True)
    return list(nodes.values()), problems


class NsqdAdmin:
    """nsqd's HTTP API for one process's bus (and nsqlookupd's, to find the nodes)."""

    def __init__(
        self,
        nsqd_tcp: Sequence[str] = (),
        nsqd_http: Sequence[str] = (),
        lookupd_http: Sequence[str] = (),
        *,
        timeout: float = 15.0,
        service: str = "",
    ) -> None:
        self.nsqd_tcp = list(nsqd_tcp)
        self.nsqd_http = list(nsqd_http)
        self.lookupd_http = list(lookupd_http)
        self.timeout = timeout
        self.service = service
        self._said: set[str] = set()

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=self.timeout, verify=client_context())

    async def nodes(self, client: httpx.AsyncClient) -> list[NsqdNode]:
        nodes, problems = await find_nodes(client, self.nsqd_tcp, self.nsqd_http, self.lookupd_http)
        for problem in problems:
            log.debug("nsqlookupd query failed", problem=problem)
        return nodes

    def say_once(self, what: str, **details: Any) -> None:
        """One line per thing waited for, however long the wait."""
        if what not in self._said:
            self._said.add(what)
            log.warning(what, service=self.service, **details)

    async def wait_publish_addresses(self, deadline: float | None = None) -> list[str]:
        """TCP addresses to publish to: the given ones, else every nsqd nsqlookupd lists
        (waiting, with backoff, until it lists one)."""
        if self.nsqd_tcp:
            return list(self.nsqd_tcp)
        async with self.client() as client:
            retry = 0
            while True:
                nodes = await self.nodes(client)
                if nodes:
                    return [node.tcp for node in nodes]
                retry += 1
                reason = "nsqlookupd lists no nsqd yet (or does not answer)"
                self._check(deadline, reason + "; start nsqd with --lookupd-tcp-address")
                self.say_once("waiting for nsqlookupd to list an nsqd", lookupd=self.lookupd_http)
                await asyncio.sleep(DISCOVERY.delay(retry))

    async def create(
        self, wanted: Mapping[str, Sequence[str]], done: set[str] | None = None
    ) -> list[tuple[NsqdNode, str]]:
        """One round: create the topics and channels on every nsqd known now (skipping
        those in `done`, which collects the ones that succeed). Returns the failures."""
        done = set() if done is None else done
        failures: list[tuple[NsqdNode, str]] = []
        async with self.client() as client:
            nodes = await self.nodes(client)
            if not nodes:
                return [(NsqdNode("", ""), "nsqlookupd lists no nsqd yet (or does not answer)")]
            for node in nodes:
                if node.tcp in done:
                    continue
                try:
                    for topic, channels in wanted.items():
                        await _post(client, node.http, "topic/create", topic=topic)
                        for channel in channels:
                            await _post(
                                client, node.http, "channel/create", topic=topic, channel=channel
                            )
                except httpx.HTTPError as exc:
                    failures.append((node, str(exc) or type(exc).__name__))
                    continue
                done.add(node.tcp)
        return failures

    async def wait_created(
        self, wanted: Mapping[str, Sequence[str]], deadline: float | None = None
    ) -> None:
        """Create the topics and channels on every nsqd, retrying with backoff until
        each known nsqd has them (or `deadline`, a loop time, passes: BusConnectError)."""
        if not wanted:
            return
        done: set[str] = set()
        retry = 0
        while failures := await self.create(wanted, done):
            retry += 1
            node, error = failures[0]
            where = f" on nsqd {node.http}" if node.http else ""
            hint = f" ({HTTP_HINT})" if node.guessed else ""
            self._check(deadline, f"cannot create topics/channels{where}: {error}{hint}")
            self.say_once(
                "waiting for nsqd's HTTP API to create topics and channels",
                nsqd_http=node.http or None,
                error=error,
                hint=HTTP_HINT if node.guessed else None,
            )
            await asyncio.sleep(DISCOVERY.delay(retry))
        if retry:
            log.info("topics and channels created", service=self.service, nsqd=sorted(done))

    @staticmethod
    def _check(deadline: float | None, reason: str) -> None:
        if deadline is not None and asyncio.get_running_loop().time() > deadline:
            raise BusConnectError(reason)

    async def delete_channel(self, topic: str, channel: str) -> None:
        async with self.client() as client:
            for node in await self.nodes(client):
                try:
                    await _post(client, node.http, "channel/delete", topic=topic, channel=channel)
                except httpx.HTTPStatusError as exc:
                    if exc.response.status_code != 404:
                        raise

    async def backlog(self, topic: str, channel: str) -> int:
        """Messages of `channel` not finished yet, on every nsqd (depth, in flight, deferred)."""
        total = 0
        for c in await self.channel_stats(topic, channel):
            if c.get("channel_name") == channel:
                total += int(c["depth"]) + int(c["in_flight_count"]) + int(c["deferred_count"])
        return total

    async def consumers(self, topic: str) -> int:
        """Clients subscribed to any channel of `topic`, over every nsqd."""
        return sum(len(c.get("clients") or []) for c in await self.channel_stats(topic))

    async def channel_stats(self, topic: str, channel: str | None = None) -> list[dict[str, Any]]:
        """nsqd's /stats of `topic`'s channels (or of one), from every nsqd."""
        found: list[dict[str, Any]] = []
        async with self.client() as client:
            for node in await self.nodes(client):
                found.extend(await node_channel_stats(client, node.http, topic, channel))
        return found

    async def channel_on_nodes(
        self, topic: str, channel: str, deadline: float
    ) -> dict[str, bool] | None:
        """Each nsqd (by TCP address) and whether it has `channel` on `topic`; asked again
        with backoff until every known nsqd's HTTP API answers, None if that is not so by
        `deadline` (a loop time)."""
        retry = 0
        while True:
            try:
                async with self.client() as client:
                    found = {
                        node.tcp: await _has_channel(client, node.http, topic, channel)
                        for node in await self.nodes(client)
                    }
                if found:
                    return found
            except (httpx.HTTPError, ValueError):
                pass
            retry += 1
            wait = DISCOVERY.delay(retry)
            if asyncio.get_running_loop().time() + wait > deadline:
                return None
            await asyncio.sleep(wait)


async def node_stats(client: httpx.AsyncClient, http: str, **only: str) -> dict[str, Any]:
    """One nsqd's /stats (JSON); `topic=`, `channel=` narrow it to those."""
    resp = await client.get(http_url(http, "/stats"), params={"format": "json", **only})
    resp.raise_for_status()
    stats = resp.json()
    return stats if isinstance(stats, dict) else {}


async def node_channel_stats(
    client: httpx.AsyncClient, http: str, topic: str, channel: str | None = None
) -> list[dict[str, Any]]:
    """One nsqd's /stats of `topic`'s channels (of `channel` only, when given)."""
    only = {"topic": topic} if channel is None else {"topic": topic, "channel": channel}
    stats = await node_stats(client, http, **only)
    return [
        c
        for t in stats.get("topics") or []
        if t.get("topic_name") == topic
        for c in t.get("channels") or []
        if channel is None or c.get("channel_name") == channel
    ]


async def _has_channel(client: httpx.AsyncClient, http: str, topic: str, channel: str) -> bool:
    return bool(await node_channel_stats(client, http, topic, channel))


async def _post(client: httpx.AsyncClient, http: str, path: str, **params: str) -> None:
    resp = await client.post(http_url(http, f"/{path}"), params=params)
    resp.raise_for_status()
