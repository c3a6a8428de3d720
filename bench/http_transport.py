"""httpx's own connection pool against aiohttp under the httpx API, at low and high concurrency.

Chat calls against the simulator (zero latency), side by side in one run:

    .venv/bin/python bench/http_transport.py --seconds 4

`upstream` is the caller's own client (`UpstreamHttp.json_call`: plain aiohttp
under the upstream clients); `aiohttp` is httpx's API over aiohttp, `httpx` its own pool.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import httpx
from httpx_aiohttp import AiohttpTransport

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpt4batch.common.upstreams.transport import UpstreamHttp
from tests.support.mock_upstream import MockUpstream


async def calls_per_second(url: str, token: str, engine: str, tasks: int, seconds: float) -> float:
    limits = httpx.Limits(max_connections=tasks + 8, max_keepalive_connections=tasks)
    transport = AiohttpTransport(limits=limits) if engine == "aiohttp" else None
    headers = {"Authorization": f"Bearer {token}"}
    done = 0
    client = (
        UpstreamHttp(tasks + 8)
        if engine == "upstream"
        else httpx.AsyncClient(limits=limits, transport=transport)
    )
    timeout = httpx.Timeout(30.0)
    async with client:
        deadline = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                if isinstance(client, UpstreamHttp):
                    reply = await client.json_call(
                        "chat", "POST", f"{url}/standard/all-tools",
                        headers=headers, timeout=timeout, body={"message": "hi"},
                    )  # fmt: skip
                    json.loads(reply.body)
                else:
                    response = await client.post(
                        f"{url}/standard/all-tools", json={"message": "hi"}, headers=headers
                    )
                    response.json()
                done += 1

        await asyncio.gather(*(worker() for _ in range(tasks)))
    return done / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 64])
    args = parser.parse_args()
    with MockUpstream() as mock:
        for engine in ("httpx", "aiohttp", "upstream"):
            for tasks in args.concurrency:
                rate = asyncio.run(
                    calls_per_second(mock.url, mock.token, engine, tasks, args.seconds)
                )
                print(f"{engine:8} in_flight={tasks:<4} calls/s={rate:,.0f}", flush=True)


if __name__ == "__main__":
    main()
