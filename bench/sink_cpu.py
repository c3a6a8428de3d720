"""The sink alone: CPU seconds per 1,000 results arriving over nsqd at a steady rate.

    .venv/bin/python bench/sink_cpu.py --base /work/wt-lead [--profile DIR]

nsqd and one sink process (`-o out --max-in-flight 1000`, as in bench/table.py's
pipeline row); this process publishes pre-built results (the one-ask records of
the pipeline row, answered by the simulator) at `--rate` per second in small
MPUBs, then the manifest, and measures the sink's CPU from its first result to
`.done` (the output written in input order). Without a caller and a simulator
competing for the two cores the figure is steadier than the pipeline row's.

`floor` is a bare pynsq Reader that only FINs, fed the same way: what receiving
and acknowledging the messages costs before any work; `bus-floor` the same through
our NsqBus and a group handler that does nothing (no validation, no write). Trees and the floor are
measured in turns (`--rounds`), side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.support import Procs, cpu_seconds  # noqa: E402
from gpt4batch.common.authenticator import SECRET_ENV  # noqa: E402
from tests.support.nsq_servers import run_nsqd  # noqa: E402
from tests.support.pipeline import wait_for  # noqa: E402
from tests.support.signing import bus_secret, signed  # noqa: E402

#: A result as the caller publishes it for a one-ask record answered by the simulator.
ANSWER = {
    "message_id": "bb64e14f-f91f-481a-a13f-b47d4fe383a2",
    "conversation_id": "b4dd7fcc-1d4c-4682-a377-2665ab1738bf",
    "created": 1795615787,
    "end_turn": False,
    "contents": [
        {
            "conversation_id": "b4dd7fcc-1d4c-4682-a377-2665ab1738bf",
            "error": None,
            "message": {
                "author": {"metadata": {}, "name": None, "role": "assistant"},
                "content": {"content_type": "text", "parts": ["Mock answer to: {q}"]},
                "create_time": 1795615787.7410796,
                "end_turn": True,
                "id": "bb64e14f-f91f-481a-a13f-b47d4fe383a2",
                "metadata": {
                    "citations": [],
                    "finish_details": {"stop_tokens": [100260], "type": "stop"},
                    "gizmo_id": None,
                    "is_complete": True,
                    "message_type": "next",
                    "model_slug": "gpt-4-gizmo",
                    "parent_id": "8a6ce757-b2fd-4d25-9e0f-ac855bc10cb3",
                    "request_id": "Sb442JrFJDJqw1cw-MCK",
                    "timestamp_": "absolute",
                },
                "recipient": "all",
                "status": "finished_successfully",
                "update_time": None,
                "weight": 1,
            },
        }
    ],
    "downloads": [],
}

FLOOR = """
import sys, nsq
from tornado.ioloop import IOLoop
nsq.Reader(topic=sys.argv[2], channel="sink", message_handler=lambda m: True,
           nsqd_tcp_addresses=[sys.argv[1]], max_in_flight=1000, max_tries=0)
IOLoop.current().start()
"""

#: Our transport alone: NsqBus (buffered reads, coalesced FINs) and a group handler that
#: validates and writes nothing.
BUS_FLOOR = """
import asyncio, sys
from gpt4batch.common.nsq.bus import NsqBus
from gpt4batch.common.settings import BaseServiceSettings

class Raw:
    @classmethod
    def model_validate_json(cls, body):
        return body

async def nothing(items):
    return [None] * len(items)

async def main():
    settings = BaseServiceSettings(nsqd_tcp_address=[sys.argv[1]], topic_prefix="bench")
    bus = NsqBus(settings, service="floor")
    bus.subscribe_batches(sys.argv[2], "sink", Raw, nothing, max_in_flight=1000)
    await bus.start()
    await asyncio.Event().wait()

asyncio.run(main())
"""


def result_body(seq: int) -> bytes:
    answer = json.dumps(ANSWER, separators=(",", ":")).replace("{q}", f"q{seq}.0")
    record = f'{{"id":"r{seq}","asks":[{{"id":"a0","content":"q{seq}.0"}}],"answers":[{answer}]}}'
    return b'{"v":1,"batch":"bench","seq":%d,"record":%s,"planned_downloads":[]}' % (
        seq,
        record.encode(),
    )


def publish_paced(http: str, topic: str, bodies: list[bytes], rate: float) -> None:
    """MPUB `bodies` at about `rate` per second, in 10-ms slices."""
    per_slice = max(1, round(rate / 100))
    started = time.perf_counter()
    with httpx.Client(timeout=60) as client:
        for n, start in enumerate(range(0, len(bodies), per_slice)):
            due = started + n / 100
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            chunk = b"\n".join(bodies[start : start + per_slice])
            client.post(f"http://{http}/mpub?topic={topic}", content=chunk).raise_for_status()


def measure(
    name: str, python: str, bodies: list[bytes], rate: float, work: Path, profile: Path | None
) -> float:
    """CPU seconds per 1,000 results of `name` ("floor", or a tree's sink)."""
    root = work / name
    with run_nsqd(root, None) as nsqd:
        http = nsqd.http_address
        httpx.post(f"http://{http}/channel/create?topic=bench.results&channel=sink")
        flags = ["--nsqd-tcp-address", nsqd.tcp_address, "--topic-prefix", "bench"]
        floor: subprocess.Popen[bytes] | None = None
        with Procs(python, root, flags) as procs:
            if name in FLOORS:
                script = FLOORS[name]
                floor = subprocess.Popen(
                    [python, "-c", script, nsqd.tcp_address, "bench.results"],
                    env={**os.environ, SECRET_ENV: bus_secret()},  # as the sink gets (Procs)
                )
                pid = floor.pid
                time.sleep(1.0)
            else:
                out = root / "out.jsonl"
                pid = procs.start("sink", "sink", "-o", str(out), "--max-in-flight", "1000").pid
            spy = None if profile is None else start_py_spy(pid, profile / f"{name}-sink.txt")
            time.sleep(0.5)  # py-spy attaches
            cpu0 = cpu_seconds(pid)
            publish_paced(http, "bench.results", bodies, rate)
            if name in FLOORS:
                wait_for(lambda: channel_depth(http) == 0, 300, "the floor reader")
            else:
                manifest = {"v": 1, "batch": "bench", "total": len(bodies)}
                httpx.post(f"http://{http}/pub?topic=bench.batches", json=manifest)
                wait_for(out.with_name("out.done").exists, 300, "the batch", procs.assert_alive)
            cpu = cpu_seconds(pid) - cpu0
            if spy is not None:
                spy.send_signal(2)  # py-spy writes its output on Ctrl-C
                spy.wait(30)
            if floor is not None:
                floor.kill()
                floor.wait(10)
    return cpu * 1000 / len(bodies)


FLOORS = {"floor": FLOOR, "bus-floor": BUS_FLOOR}


def channel_depth(http: str) -> int:
    """Messages of the results topic's channel not yet finished."""
    stats = httpx.get(f"http://{http}/stats?format=json&topic=bench.results").json()
    left = 0
    for topic in stats.get("topics", []):
        for channel in topic.get("channels", []):
            left += channel["depth"] + channel["in_flight_count"] + channel["deferred_count"]
    return left


def start_py_spy(pid: int, output: Path) -> subprocess.Popen[bytes]:
    output.parent.mkdir(parents=True, exist_ok=True)
    spy = str(Path(sys.executable).parent / "py-spy")
    cmd = [spy, "record", "--pid", str(pid), "--rate", "500", "--format", "raw", "--gil"]
    cmd += ["--output", str(output), "--nonblocking"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=1000, help="results published per second")
    parser.add_argument("--base", type=Path, help="another checkout with its own .venv")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-floor", action="store_true", help="skip the bare-reader floor")
    parser.add_argument("--profile", type=Path, help="py-spy each sink into DIR/<tree>-sink.txt")
    args = parser.parse_args()
    trees = {"now": str(ROOT / ".venv" / "bin" / "python")}
    if args.base is not None:
        trees["base"] = str(args.base.resolve() / ".venv" / "bin" / "python")
    if not args.no_floor:
        trees.update({name: trees["now"] for name in FLOORS})
    # Signed as the caller signs them: the sink verifies each (an older tree ignores "auth").
    bodies = [signed("bench.results", result_body(seq)) for seq in range(args.records)]
    figures: dict[str, list[float]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory(prefix="bench-sink-") as tmp:
        for round_ in range(args.rounds):
            for name, python in trees.items():
                work = Path(tmp) / f"round{round_}"
                per_k = measure(name, python, bodies, args.rate, work, args.profile)
                figures[name].append(per_k)
                print(f"  … {name}: {per_k:.3f} CPU s per 1,000 results", flush=True)
    summary = ", ".join(f"{n} {min(v):.3f}" for n, v in figures.items())
    print(f"sink CPU s per 1,000 results ({args.records} at {args.rate:.0f}/s, best): {summary}")
    if "base" in figures:
        print(f"now ÷ base: {min(figures['now']) / min(figures['base']):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
