"""Who shares a limit group, seen through nsqd alone (no other database).

Every member keeps one TCP connection to each nsqd, subscribed to the ephemeral
channel `members#ephemeral` of the ephemeral topic `<group>.limits#ephemeral`
with its member id as `client_id` and its own limits in `user_agent`. Nothing
is ever published there (RDY stays 0); the subscription is the registration
(common/nsq/registration.py). Each member reads every nsqd's `/stats` for that
channel: the union of the client ids is the group. A member that exits or is
`kill -9`ed drops out at once (the kernel closes its sockets); one whose host
vanishes drops out after two missed heartbeats (2 s).

A member that gets a 429 from a token limit registers a second client for the
pause (`<member id>~pause`, user agent `pause-until=<epoch s>`) until it ends:
every member reads it with the group and pauses its model calls as long
(fleet.py). It is no member: it takes no share.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from gpt4batch.common.logging import get_logger
from gpt4batch.common.nsq.admin import find_nodes
from gpt4batch.common.nsq.registration import Node, registered_by_node
from gpt4batch.common.topics import check_name

log = get_logger("gpt4batch.limits")

CHANNEL = "members#ephemeral"
_AGENT = re.compile(r"qps=([0-9.eE+-]+) concurrency=(\d+)(?: tpm=(\d+))?")
_PAUSE = re.compile(r"pause-until=([0-9.]+)")


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
    #: The members registered on every node (none unless every node answered).
    everywhere: set[str] = field(default_factory=set)

    def alone(self, member_id: str) -> bool:
        """`member_id` is the only member and is registered on every node read."""
        return set(self.members) == {member_id} and member_id in self.everywhere


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
    by_node = await registered_by_node(http, nodes, topic, CHANNEL)
    if by_node is None:
        return None
    view = GroupView({})
    on_node: list[set[str]] = []
    for clients in by_node:
        on_node.append(set())
        for client_id, agent in clients:
            if match := _AGENT.search(agent):
                qps, concurrency, tpm = float(match[1]), int(match[2]), int(match[3] or 0)
                view.members.setdefault(client_id, Member(client_id, qps, concurrency, tpm))
                on_node[-1].add(client_id)
            elif match := _PAUSE.search(agent):
                view.pause_until = max(view.pause_until, float(match[1]))
    if len(on_node) == len(nodes):
        view.everywhere = set.intersection(*on_node)
    return view
