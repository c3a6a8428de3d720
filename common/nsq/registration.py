"""Being seen on nsqd without publishing: a subscription whose client id and user agent say
who a process is and what it offers.

A registration keeps one TCP connection to an nsqd, subscribed to an ephemeral
channel of an ephemeral topic, with `IDENTIFY`'s `client_id` and `user_agent`
set to what the registrant says (`id`, `agent()`). Nothing is ever published
there (RDY stays 0); the subscription is the registration, and whoever reads
nsqd's `/stats` for that channel sees it. A process that exits or is `kill -9`ed
drops out at once (the kernel closes its sockets); one whose host vanishes drops
out after two missed heartbeats (2 s). Used by the fleet limits
(services/caller/limits/membership.py) and the callers' registry
(common/nsq/callers.py).
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx

from gpt4batch.common.logging import get_logger
from gpt4batch.common.nsq.admin import node_channel_stats

log = get_logger("gpt4batch.nsq")

#: The channel every registration subscribes to, unless told otherwise.
CHANNEL = "members#ephemeral"
_FRAME_ERROR = 1


class Registrant(Protocol):
    """Who registers: `id` is the client id, `agent()` the user agent others read."""

    @property
    def id(self) -> str: ...

    def agent(self) -> str: ...


@dataclass(frozen=True)
class Node:
    tcp: str
    http: str


async def registered(
    http: httpx.AsyncClient, nodes: Sequence[Node], topic: str, channel: str = CHANNEL
) -> list[tuple[str, str]] | None:
    """(client id, user agent) of every client registered on `channel` of `topic`, node by
    node (None when no node's `/stats` answered)."""
    by_node = await registered_by_node(http, nodes, topic, channel)
    return None if by_node is None else [client for found in by_node for client in found]


async def registered_by_node(
    http: httpx.AsyncClient, nodes: Sequence[Node], topic: str, channel: str = CHANNEL
) -> list[list[tuple[str, str]]] | None:
    """`registered`, one list per node that answered (None when none did)."""
    answers = await asyncio.gather(
        *(node_channel_stats(http, node.http, topic, channel) for node in nodes),
        return_exceptions=True,
    )
    by_node: list[list[tuple[str, str]]] = []
    for node, answer in zip(nodes, answers, strict=True):
        if isinstance(answer, BaseException):
            log.debug("nsqd /stats failed", nsqd=node.http, error=str(answer))
            continue
        found: list[tuple[str, str]] = []
        for stats in answer:
            for client in stats.get("clients") or []:
                if client.get("client_id"):
                    found.append((client["client_id"], client.get("user_agent") or ""))
        by_node.append(found)
    return by_node or None


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _command(name: bytes, body: bytes) -> bytes:
    return name + b"\n" + struct.pack(">I", len(body)) + body


class Registration:
    """The subscription that makes `member` visible on one nsqd; reconnects until closed."""

    def __init__(
        self,
        node: Node,
        topic: str,
        member: Registrant,
        auth_secret: str | None = None,
        channel: str = CHANNEL,
    ) -> None:
        self.node = node
        self.topic = topic
        self.member = member
        self.auth_secret = auth_secret
        self.channel = channel
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"registration {self.node.tcp}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _hello(self) -> bytes:
        identify = {
            "client_id": self.member.id,
            "hostname": socket.gethostname(),
            "user_agent": self.member.agent(),
            "heartbeat_interval": 1000,
            "feature_negotiation": False,
        }
        out = b"  V2" + _command(b"IDENTIFY", json.dumps(identify).encode())
        if self.auth_secret:
            out += _command(b"AUTH", self.auth_secret.encode())
        return out + f"SUB {self.topic} {self.channel}\n".encode()

    async def _run(self) -> None:
        host, port = _host_port(self.node.tcp)
        while True:
            writer: asyncio.StreamWriter | None = None
            try:
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(self._hello())
                await writer.drain()
                while True:
                    (size,) = struct.unpack(">I", await reader.readexactly(4))
                    frame = await reader.readexactly(size)
                    if struct.unpack(">I", frame[:4])[0] == _FRAME_ERROR:
                        raise ConnectionError(frame[4:].decode(errors="replace"))
                    if frame[4:] == b"_heartbeat_":
                        writer.write(b"NOP\n")
            except (OSError, asyncio.IncompleteReadError) as exc:
                # Refused (nsqd not up yet, restarting) is said by the bus, once.
                report = log.warning if writer is not None else log.debug
                report("nsqd registration lost", nsqd=self.node.tcp, topic=self.topic,
                       error=str(exc))  # fmt: skip
            finally:
                if writer is not None:
                    writer.close()
            await asyncio.sleep(1.0)
