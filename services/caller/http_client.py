"""The caller's one pooled HTTP client to the upstream, counted in the upstream metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from gpt4batch.common.upstreams.transport import UpstreamHttp
from gpt4batch.services.caller import metrics
from gpt4batch.services.caller.call_stats import CallStats

_ENDPOINTS = {"uploaded": "upload", "all-tools": "chat", "gizmos": "chat", "completions": "chat"}


async def _mark_start(request: httpx.Request) -> None:
    request.extensions["gpt4batch_started"] = time.perf_counter()


def _endpoint(response: httpx.Response) -> str:
    last = response.request.url.path.rstrip("/").rsplit("/", 1)[-1]
    return _ENDPOINTS.get(last, "chat" if response.request.method == "POST" else last)


async def _observe(response: httpx.Response) -> None:
    endpoint = _endpoint(response)
    metrics.UPSTREAM_CALLS.labels(endpoint, str(response.status_code)).inc()
    if response.status_code == 429:
        metrics.RATE_LIMITED.inc()
    started = response.request.extensions.get("gpt4batch_started")
    if started is not None:
        metrics.UPSTREAM_SECONDS.labels(endpoint).observe(time.perf_counter() - started)


#: The metric children of each (endpoint, status) seen: `.labels()` once each, not per call.
_CALL_METRICS: dict[tuple[str, int], tuple[Any, Any]] = {}


def _observe_json_call(endpoint: str, status: int, seconds: float) -> None:
    children = _CALL_METRICS.get((endpoint, status))
    if children is None:
        children = _CALL_METRICS[endpoint, status] = (
            metrics.UPSTREAM_CALLS.labels(endpoint, str(status)),
            metrics.UPSTREAM_SECONDS.labels(endpoint),
        )
    children[0].inc()
    if status == 429:
        metrics.RATE_LIMITED.inc()
    children[1].observe(seconds)


def make_http_client(
    concurrency: int, transport: str = "aiohttp", calls: CallStats | None = None
) -> httpx.AsyncClient:
    """The process's one pooled HTTP client, instrumented for the upstream metrics.

    httpx's own connection pool slows down as concurrency grows (110 calls/s at
    64 in flight against 1,370 with aiohttp on this machine: bench/http_transport.py),
    so by default aiohttp does the I/O: JSON calls straight through an aiohttp
    session, the rest (uploads, streams) under the httpx API (`UpstreamHttp`).
    """
    hooks: dict[str, list[Callable[..., Any]]] = {"request": [_mark_start], "response": [_observe]}
    observe = _observe_json_call
    if calls is not None:  # also count into the caller's own CallStats (a run's summary)

        async def count(response: httpx.Response) -> None:
            calls.record(_endpoint(response), response.status_code)

        def observe(endpoint: str, status: int, seconds: float) -> None:
            _observe_json_call(endpoint, status, seconds)
            calls.record(endpoint, status)

        hooks["response"].append(count)
    if transport == "aiohttp":
        return UpstreamHttp(
            concurrency + 8, observe=observe, event_hooks=hooks, follow_redirects=False
        )
    limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(limits=limits, event_hooks=hooks, follow_redirects=False)
