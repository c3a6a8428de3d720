"""httpx's own connection pool against aiohttp under the httpx API, at low and high concurrency.

Chat calls against the simulator (zero latency), side by side in one run:

    .venv/bin/python bench/http_transport.py --seconds 4

This is why the caller's HTTP client uses `httpx_aiohttp.AiohttpTransport`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import httpx
from httpx_aiohttp import AiohttpTransport

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.mock_upstream import MockUpstream


async def calls_per_second(url: str, token: str, engine: str, tasks: int, seconds: float) -> float:
    limits = httpx.Limits(max_connections=tasks + 8, max_keepalive_connections=tasks)
    transport = AiohttpTransport(limits=limits) if engine == "aiohttp" else None
    headers = {"Authorization": f"Bearer {token}"}
    done = 0
    async with httpx.AsyncClient(limits=limits, transport=transport) as client:
        deadline = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < deadline:
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
        for engine in ("httpx", "aiohttp"):
            for tasks in args.concurrency:
                rate = asyncio.run(
                    calls_per_second(mock.url, mock.token, engine, tasks, args.seconds)
                )
                print(f"{engine:8} in_flight={tasks:<4} calls/s={rate:,.0f}", flush=True)


if __name__ == "__main__":
    main()
