"""Who shares a limit group, seen through nsqd alone (no other database).

Every member keeps one TCP connection to each nsqd, subscribed to the ephemeral
channel `members#ephemeral` of the ephemeral topic `<group>.limits#ephemeral`
with its member id as `client_id` and its own limits in `user_agent`. Nothing
is ever published there (RDY stays 0); the subscription is the registration.
Each member reads every nsqd's `/stats` for that channel: the union of the
client ids is the group. A member that exits or is `kill -9`ed drops out at
once (the kernel closes its sockets); one whose host vanishes drops out after
two missed heartbeats (2 s).

A member that gets a 429 from a token limit registers a second client for the
pause (`<member id>~pause`, user agent `pause-until=<epoch s>`) until it ends:
every member reads it with the group and pauses its model calls as long
(fleet.py). It is no member: it takes no share.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from gpt4batch.common.logging import get_logger
from gpt4batch.common.nsq.admin import find_nodes, node_channel_stats
from gpt4batch.common.topics import check_name

log = get_logger("gpt4batch.limits")

CHANNEL = "members#ephemeral"
_AGENT = re.compile(r"qps=([0-9.eE+-]+) concurrency=(\d+)(?: tpm=(\d+))?")
_PAUSE = re.compile(r"pause-until=([0-9.]+)")
_FRAME_ERROR = 1


def topic_for(group: str) -> str:
    return check_name(f"{group}.limits#ephemeral", "limit group topic")


def new_member_id() -> str:
    host = re.sub(r"[^a-zA-Z0-9_.-]", "-", socket.gethostname())[:40]
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Member:
    """One caller of the group, with the limits it was started with."""

    id: str
    qps: float
    concurrency: int
    tpm: int = 0

    def agent(self) -> str:
        """The user agent that registers it: its limits, read by the other members."""
        return f"gpt4batch-limiter qps={self.qps:g} concurrency={self.concurrency} tpm={self.tpm}"


@dataclass(frozen=True)
class Pause:
    """A member's 429 pause (`until`: wall-clock seconds), published like a member."""

    id: str
    until: float

    def agent(self) -> str:
        return f"gpt4batch-limiter pause-until={self.until:.3f}"


@dataclass
class GroupView:
    """What one read of the group found: its members, and the latest pause announced."""

    members: dict[str, Member]
    pause_until: float = 0.0


@dataclass(frozen=True)
class Node:
    tcp: str
    http: str


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _command(name: bytes, body: bytes) -> bytes:
    return name + b"\n" + struct.pack(">I", len(body)) + body


class Registration:
    """The subscription that makes `member` visible on one nsqd; reconnects until closed."""

    def __init__(
        self, node: Node, topic: str, member: Member | Pause, auth_secret: str | None = None
    ) -> None:
        self.node = node
        self.topic = topic
        self.member = member
        self.auth_secret = auth_secret
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"limit-registration {self.node.tcp}")

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
        return out + f"SUB {self.topic} {CHANNEL}\n".encode()

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
                report("limit group registration lost", nsqd=self.node.tcp, error=str(exc))
            finally:
                if writer is not None:
                    writer.close()
            await asyncio.sleep(1.0)


async def discover_nodes(
    http: httpx.AsyncClient,
    nsqd_tcp: Sequence[str],
    lookupd_http: Sequence[str],
    nsqd_http: Sequence[str] = (),
) -> list[Node]:
    """nsqd nodes from nsqlookupd `/nodes`, then the given addresses (see common/nsq/admin)."""
    nodes, problems = await find_nodes(http, nsqd_tcp, nsqd_http, lookupd_http)
    for problem in problems:  # every 0.5 s while nsqlookupd is away: the bus says it once
        log.debug("nsqlookupd query failed", problem=problem)
    return [Node(node.tcp, node.http) for node in nodes]


async def read_members(
    http: httpx.AsyncClient, nodes: Sequence[Node], topic: str
) -> GroupView | None:
    """Members (and pauses) registered on any node (None when no node answered)."""
    answers = await asyncio.gather(
        *(_node_members(http, node, topic) for node in nodes), return_exceptions=True
    )
    view = GroupView({})
    answered = False
    for node, answer in zip(nodes, answers, strict=True):
        if isinstance(answer, BaseException):
            log.debug("nsqd /stats failed", nsqd=node.http, error=str(answer))
            continue
        answered = True
        for found in answer:
            if isinstance(found, Pause):
                view.pause_until = max(view.pause_until, found.until)
            else:
                view.members.setdefault(found.id, found)
    return view if answered else None


async def _node_members(http: httpx.AsyncClient, node: Node, topic: str) -> list[Member | Pause]:
    found: list[Member | Pause] = []
    for channel in await node_channel_stats(http, node.http, topic, CHANNEL):
        for client in channel.get("clients") or []:
            agent, client_id = client.get("user_agent") or "", client.get("client_id")
            if not client_id:
                continue
            if match := _AGENT.search(agent):
                qps, concurrency, tpm = float(match[1]), int(match[2]), int(match[3] or 0)
                found.append(Member(client_id, qps, concurrency, tpm))
            elif match := _PAUSE.search(agent):
                found.append(Pause(client_id, float(match[1])))
    return found
