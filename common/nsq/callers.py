"""What the fleet's callers serve, seen through nsqd (the gateway reads it).

Every caller on NSQ registers on each nsqd (common/nsq/registration.py) on the
ephemeral topic `<prefix>.callers#ephemeral`, channel `serving#ephemeral`,
with its id as `client_id` and what it serves as `user_agent`:

    gpt4batch-caller kind=openai concurrency=60 limit=process endpoints=/v1/responses,…

(`limit=fleet:<group>` when its `--concurrency` is shared by a limit group).
A reader gets every registered caller from every nsqd's `/stats`; a caller that
stops drops out at once, one whose host vanishes within two heartbeats.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import httpx

from gpt4batch.common.logging import get_logger
from gpt4batch.common.nsq.admin import NsqdAdmin, find_nodes
from gpt4batch.common.nsq.registration import Node, Registration, registered
from gpt4batch.common.topics import check_name

log = get_logger("gpt4batch.nsq")

CHANNEL = "serving#ephemeral"
_AGENT = re.compile(
    r"^gpt4batch-caller kind=(\S+) concurrency=(\d+) limit=(process|fleet:\S+) endpoints=(\S*)$"
)
#: Seconds between two looks for nsqd nodes to register on (new nodes join then).
REDISCOVER = 10.0


def topic_for(prefix: str) -> str:
    return check_name(f"{prefix}.callers#ephemeral", "callers topic")


@dataclass(frozen=True)
class CallerInfo:
    """One caller: its upstream kind, the endpoints it serves, its `--concurrency` and
    whether that is its own (`process`) or a limit group's (`fleet:<group>`)."""

    id: str
    kind: str
    concurrency: int
    endpoints: tuple[str, ...]
    limit: str = "process"

    def agent(self) -> str:
        return (
            f"gpt4batch-caller kind={self.kind} concurrency={self.concurrency} "
            f"limit={self.limit} endpoints={','.join(self.endpoints)}"
        )


def parse_agent(client_id: str, agent: str) -> CallerInfo | None:
    """The caller a registration's client id and user agent describe (None: not one)."""
    match = _AGENT.match(agent)
    if not client_id or match is None:
        return None
    endpoints = tuple(e for e in match[4].split(",") if e)
    return CallerInfo(client_id, match[1], int(match[2]), endpoints, match[3])


def fleet_concurrency(callers: Iterable[CallerInfo]) -> int:
    """Conversations the fleet runs at once: each process-limited caller's own
    `--concurrency`, plus each limit group's once (its smallest, as the group uses it)."""
    total = 0
    groups: dict[str, int] = {}
    for caller in callers:
        if caller.limit == "process":
            total += caller.concurrency
        else:
            seen = groups.get(caller.limit, caller.concurrency)
            groups[caller.limit] = min(seen, caller.concurrency)
    return total + sum(groups.values())


async def read_callers(admin: NsqdAdmin, prefix: str) -> list[CallerInfo] | None:
    """Every caller registered on any nsqd, by id (None: no nsqd answered)."""
    async with admin.client() as client:
        nodes = [Node(node.tcp, node.http) for node in await admin.nodes(client)]
        clients = await registered(client, nodes, topic_for(prefix), CHANNEL)
    if clients is None:
        return None
    found: dict[str, CallerInfo] = {}
    for client_id, agent in clients:
        caller = parse_agent(client_id, agent)
        if caller is not None:
            found.setdefault(caller.id, caller)
    return list(found.values())


class CallerRegistry:
    """Keeps `me` registered on every nsqd (found again every `REDISCOVER` s)."""

    def __init__(
        self,
        me: CallerInfo,
        prefix: str,
        *,
        nsqd_tcp: Sequence[str] = (),
        nsqd_http: Sequence[str] = (),
        lookupd_http: Sequence[str] = (),
        auth_secret: str | None = None,
    ) -> None:
        self.me = me
        self.topic = topic_for(prefix)
        self.nsqd_tcp, self.nsqd_http = list(nsqd_tcp), list(nsqd_http)
        self.lookupd_http = list(lookupd_http)
        self.auth_secret = auth_secret
        self._registrations: dict[str, Registration] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="caller-registry")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await asyncio.gather(*(r.close() for r in self._registrations.values()))
        self._registrations.clear()

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=5.0) as http:
            while True:
                nodes, _ = await find_nodes(http, self.nsqd_tcp, self.nsqd_http, self.lookupd_http)
                for node in nodes:
                    if node.tcp not in self._registrations:
                        registration = Registration(
                            Node(node.tcp, node.http),
                            self.topic,
                            self.me,
                            self.auth_secret,
                            channel=CHANNEL,
                        )
                        registration.start()
                        self._registrations[node.tcp] = registration
                await asyncio.sleep(REDISCOVER if nodes else 0.5)
