"""Ceiling of the mock-upstream simulator: chained chat calls per second.

Starts the simulator as a separate process (zero latency, no faults), then
runs `--concurrency` conversations at a time, each `--turns` chained
`all-tools` calls, spread over `--procs` load-generator processes with one
pooled httpx.AsyncClient each, for `--seconds`. Prints calls/s, the
simulator's CPU seconds (so calls per simulator CPU-second, the ceiling of one
core when the load generator is not the limit) and its /stats (chain errors
must be 0).

    .venv/bin/python bench/mock_upstream_ceiling.py --concurrency 64 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time

import httpx

TOKEN = "sk-bench"


def start_simulator() -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "gpt4batch.services.mock_upstream", "--port", "0"]
    proc = subprocess.Popen(
        [*cmd, "--token", TOKEN, "--seed", "1"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("listening "):
        proc.kill()
        raise SystemExit(f"simulator did not start: {line!r}")
    return proc, line.split(" ", 1)[1]


async def _load(url: str, tasks: int, turns: int, seconds: float) -> tuple[int, int]:
    limits = httpx.Limits(max_connections=tasks, max_keepalive_connections=tasks)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    deadline = time.monotonic() + seconds
    done = errors = 0

    async def conversation_loop(http: httpx.AsyncClient) -> None:
        nonlocal done, errors
        while time.monotonic() < deadline:
            state: dict[str, str] = {}
            for turn in range(turns):
                body = {"message": f"turn {turn}", "model": "gpt-4", **state}
                r = await http.post(f"{url}/standard/all-tools", json=body)
                if r.status_code != 200:
                    errors += 1
                    break
                answer = r.json()
                done += 1
                state = {
                    "conversation_id": answer["conversation_id"],
                    "parent_message_id": answer["message_id"],
                }

    # TCP_NODELAY: without it Nagle + delayed ACK add ~40 ms to every small POST.
    transport = httpx.AsyncHTTPTransport(
        limits=limits, socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    )
    async with httpx.AsyncClient(transport=transport, headers=headers, timeout=30) as http:
        await asyncio.gather(*(conversation_loop(http) for _ in range(tasks)))
    return done, errors


def cpu_seconds(pid: int) -> float:
    """User+system CPU time a process has used (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _load_raw(url: str, tasks: int, turns: int, seconds: float) -> tuple[int, int]:
    """The same loop over bare keep-alive sockets: the simulator's ceiling without httpx's cost."""
    host, port = httpx.URL(url).host, httpx.URL(url).port
    deadline = time.monotonic() + seconds
    done = errors = 0

    async def conversation_loop() -> None:
        nonlocal done, errors
        reader, writer = await asyncio.open_connection(host, port)
        while time.monotonic() < deadline:
            state: dict[str, str] = {}
            for turn in range(turns):
                body = json.dumps({"message": f"turn {turn}", "model": "gpt-4", **state}).encode()
                writer.write(
                    b"POST /standard/all-tools HTTP/1.1\r\nHost: bench\r\n"
                    b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                    b"Content-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                answer = json.loads(await reader.readexactly(length))
                if not head.startswith(b"HTTP/1.1 200"):
                    errors += 1
                    break
                done += 1
                state = {
                    "conversation_id": answer["conversation_id"],
                    "parent_message_id": answer["message_id"],
                }
        writer.close()

    await asyncio.gather(*(conversation_loop() for _ in range(tasks)))
    return done, errors


def _worker(url: str, tasks: int, turns: int, seconds: float, raw: bool, out: mp.Queue) -> None:
    load = _load_raw if raw else _load
    out.put(asyncio.run(load(url, tasks, turns, seconds)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--concurrency", type=int, default=64, help="conversations in flight")
    p.add_argument("--procs", type=int, default=2, help="load-generator processes")
    p.add_argument("--turns", type=int, default=2, help="chained calls per conversation")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--raw", action="store_true", help="bare sockets instead of httpx clients")
    args = p.parse_args()
    proc, url = start_simulator()
    try:
        out: mp.Queue = mp.Queue()
        per = max(1, args.concurrency // args.procs)
        workers = [
            mp.Process(target=_worker, args=(url, per, args.turns, args.seconds, args.raw, out))
            for _ in range(args.procs)
        ]
        started, cpu_before = time.monotonic(), cpu_seconds(proc.pid)
        for w in workers:
            w.start()
        results = [out.get() for _ in workers]
        elapsed = time.monotonic() - started
        sim_cpu = cpu_seconds(proc.pid) - cpu_before
        for w in workers:
            w.join()
        stats = httpx.get(f"{url}/stats").json()
    finally:
        proc.terminate()
        proc.wait(10)
    calls = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    client = "raw sockets" if args.raw else "httpx"
    print(f"client={client} calls={calls} errors={errors} elapsed={elapsed:.1f}s")
    print(f"ceiling_calls_per_s={calls / elapsed:.0f}")
    # The simulator's cost per call, independent of how fast the load generator is:
    print(
        f"simulator_cpu_s={sim_cpu:.2f} calls_per_simulator_cpu_s={calls / max(sim_cpu, 1e-9):.0f}"
    )
    print("simulator_stats=" + json.dumps(stats))
    return 0 if errors == 0 and stats["chain_errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
