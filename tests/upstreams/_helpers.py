"""Shared helpers of the upstream tests: event-loop runner, configs, fault headers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from gpt4batch.common.upstreams import UpstreamConfig

from ..support.mock_upstream import MockUpstream

TESTS = Path(__file__).resolve().parent.parent
DATA = TESTS / "data"
T = TypeVar("T")

__all__ = ["DATA", "MockUpstream", "fault", "gpt4api_config", "openai_config", "run"]


def run(make: Callable[[httpx.AsyncClient], Awaitable[T]], **client_kw: Any) -> T:
    """Run `make(http)` on a fresh loop with a fresh httpx.AsyncClient."""

    async def main() -> T:
        async with httpx.AsyncClient(**client_kw) as http:
            return await make(http)

    return asyncio.run(main())


def gpt4api_config(mock: MockUpstream, **kw: Any) -> UpstreamConfig:
    return UpstreamConfig(kind="gpt4api", base_url=mock.url, **{"access_token": mock.token, **kw})


def openai_config(mock: MockUpstream, **kw: Any) -> UpstreamConfig:
    return UpstreamConfig(kind="openai", base_url=mock.url, **{"access_token": mock.token, **kw})


def service_config(mock: MockUpstream, **kw: Any) -> UpstreamConfig:
    return UpstreamConfig(
        kind="chatgpt-service",
        base_url=f"{mock.url}/chatgpt-service/chat",
        access_token=mock.token,
        **kw,
    )


def fault(kind: str) -> dict[str, Any]:
    """httpx.AsyncClient kwargs asking the simulator for one fault on every call."""
    return {"headers": {"X-Mock-Fault": kind}}


def delta(before: dict[str, Any], after: dict[str, Any], key: str, sub: str | None = None) -> int:
    """How much a /stats counter grew between two snapshots."""
    if sub is None:
        return int(after[key]) - int(before[key])
    return int(after[key].get(sub, 0)) - int(before[key].get(sub, 0))
