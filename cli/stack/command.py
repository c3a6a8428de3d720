"""`gpt4batch stack up|down`: the compose topology as local processes on 127.0.0.1.

`up` starts NSQ, the services and optionally the simulator and Prometheus on
free ports, logs each to `<workdir>/logs/<name>.log`, describes the stack in
`<workdir>/stack.json` and runs until Ctrl-C/SIGTERM, then stops by PID: the
services first (so they drain), NSQ last. `down` stops a running stack from
its stack.json. Any `GPT4BATCH_*` variable in the environment reaches every
service (e.g. `GPT4BATCH_QPS=20`); the stack sets the addresses itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from gpt4batch.cli.stack.plan import MissingProgram, Plan, StackOptions
from gpt4batch.cli.stack.procs import Proc, pid_alive, pid_runs, stop_pids
from gpt4batch.common.nsq.admin import NsqdAdmin
from gpt4batch.common.settings import DEFAULT_MAX_MSG_SIZE, CliParser
from gpt4batch.common.topics import Topics, standard_channels

STATE = "stack.json"
READY_TIMEOUT = 30.0

# Stop order: work producers first, then each stage downstream, NSQ last.
STOP_TIERS: tuple[tuple[str, ...], ...] = (
    ("prometheus", "ingest"),
    ("caller",),
    ("downloader",),
    ("sink",),
    ("mock-upstream", "nsq-exporter", "nsqadmin"),
    ("nsqd",),
    ("nsqlookupd",),
)


def parser() -> argparse.ArgumentParser:
    p = CliParser(prog="gpt4batch stack", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the stack and run until Ctrl-C/SIGTERM")
    up.add_argument("--workdir", type=Path, default=Path("stack"), help="folder (default ./stack)")
    up.add_argument("--callers", type=int, default=1, help="caller processes (default 1)")
    up.add_argument("--nsqd", type=int, default=1, help="nsqd nodes (default 1)")
    up.add_argument("--with-simulator", action="store_true", help="run mock-upstream as upstream")
    up.add_argument("--with-prometheus", action="store_true", help="run Prometheus scraping all")
    up.add_argument("--topic-prefix", default="gpt4batch", help="topic prefix (default gpt4batch)")
    up.add_argument(
        "--max-msg-size", type=int, default=DEFAULT_MAX_MSG_SIZE, help="nsqd and publishers"
    )
    up.add_argument("--max-msg-timeout", default="30m", help="nsqd --max-msg-timeout (30m)")
    up.add_argument("--scrape-interval", default="2s", help="Prometheus scrape interval (2s)")
    up.add_argument("--upstream", help="caller upstream kind (default: env, or gpt4api)")
    up.add_argument("--base-url", help="caller upstream base URL (default: env or simulator)")
    up.add_argument(
        "--simulator-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra mock-upstream argument, repeatable (e.g. --simulator-arg=--fault-5xx=0.05)",
    )
    down = sub.add_parser("down", help="stop a running stack")
    down.add_argument(
        "--workdir", type=Path, default=Path("stack"), help="folder (default ./stack)"
    )
    down.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default 60)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "down":
        return down(args.workdir, args.timeout)
    opts = StackOptions(
        workdir=args.workdir,
        callers=args.callers,
        nsqd=args.nsqd,
        with_simulator=args.with_simulator,
        with_prometheus=args.with_prometheus,
        topic_prefix=args.topic_prefix,
        max_msg_size=args.max_msg_size,
        max_msg_timeout=args.max_msg_timeout,
        scrape_interval=args.scrape_interval,
        simulator_args=args.simulator_arg,
        upstream=args.upstream,
        base_url=args.base_url,
    )
    if opts.callers < 1 or opts.nsqd < 1:
        print("gpt4batch stack: error: --callers and --nsqd must be at least 1", file=sys.stderr)
        return 2
    return up(opts)


def up(opts: StackOptions) -> int:
    try:
        plan = Plan(opts)
    except MissingProgram as exc:
        print(f"gpt4batch stack: error: {exc}", file=sys.stderr)
        return 2
    for folder in plan.folders():
        folder.mkdir(parents=True, exist_ok=True)
    if opts.with_prometheus:
        plan.write_prometheus_config()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    started: list[Proc] = []
    code = 0
    try:
        for proc in plan.procs:
            if stop.is_set():
                break
            proc.start(plan.logs, os.environ)
            started.append(proc)
            proc.wait_ready(READY_TIMEOUT)
            if proc.component == "nsqd" and proc is _last(plan.procs, "nsqd"):
                _wait_registered(plan)
                _create_topics(plan)
        _write_state(plan, started)
        print(_summary(plan), flush=True)
        exited: set[str] = set()
        while not stop.wait(0.5):
            for proc in started:
                if proc.name not in exited and proc.popen and proc.popen.poll() is not None:
                    exited.add(proc.name)
                    print(f"stack: {proc.name} exited with {proc.popen.returncode}", flush=True)
    except Exception as exc:
        print(f"gpt4batch stack: error: {exc} (logs in {plan.logs})", file=sys.stderr)
        code = 1
    finally:
        print("stack: stopping", flush=True)
        _stop(started)
        _mark_stopped(plan)
        print("stack: stopped", flush=True)
    return code


def _last(procs: list[Proc], component: str) -> Proc | None:
    found = [p for p in procs if p.component == component]
    return found[-1] if found else None


def _wait_registered(plan: Plan, timeout: float = 15.0) -> None:
    """Wait until nsqlookupd lists every nsqd, so discovery finds them all."""
    url = f"http://{plan.addresses.lookupd_http}/nodes"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        producers = httpx.get(url, timeout=2.0).json().get("producers", [])
        if len(producers) >= len(plan.addresses.nsqd):
            return
        time.sleep(0.05)
    raise RuntimeError("nsqd did not register with nsqlookupd")


def _create_topics(plan: Plan, timeout: float = 15.0) -> None:
    """The topics and the services' channels on every nsqd up front (through the admin
    client every bus uses), so consumers that find nsqd through nsqlookupd see them at once."""
    nodes = plan.addresses.nsqd
    admin = NsqdAdmin([n["tcp"] for n in nodes], [n["http"] for n in nodes], service="stack")
    wanted = standard_channels(Topics(plan.opts.topic_prefix))

    async def create() -> None:
        await admin.wait_created(wanted, asyncio.get_running_loop().time() + timeout)

    asyncio.run(create())


def _stop(started: list[Proc]) -> None:
    """Stop tier by tier (each tier's processes together), by PID."""
    for tier in STOP_TIERS:
        pids = [p.pid for p in started if p.component in tier and p.pid]
        if pids:
            stop_pids(pids, timeout=45.0)
    rest = [p.pid for p in started if p.pid and pid_alive(p.pid)]
    if rest:
        stop_pids(rest, timeout=10.0)


def _state(plan: Plan, started: list[Proc]) -> dict[str, Any]:
    a = plan.addresses
    return {
        "workdir": str(plan.workdir),
        "launcher_pid": os.getpid(),
        "topic_prefix": plan.opts.topic_prefix,
        "inbox": str(plan.inbox),
        "processed": str(plan.processed),
        "outbox": str(plan.outbox),
        "downloads": str(plan.downloads),
        "logs": str(plan.logs),
        "addresses": {
            "nsqlookupd_tcp": a.lookupd_tcp,
            "nsqlookupd_http": a.lookupd_http,
            "nsqd": a.nsqd,
            "nsqadmin_http": a.nsqadmin_http,
            "gateway": a.gateway,
            "gateway_api_key_file": str(plan.gateway_key_file),
            "bus_secret_file": str(plan.bus_secret_file),
            "simulator": a.simulator,
            "prometheus": a.prometheus,
        },
        "processes": [
            {
                "name": p.name,
                "component": p.component,
                "pid": p.pid,
                "argv": p.argv,
                "metrics_port": p.metrics_port,
                "log": str(plan.logs / f"{p.name}.log"),
            }
            for p in started
        ],
        "running": True,
    }


def _write_state(plan: Plan, started: list[Proc]) -> None:
    path = plan.workdir / STATE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_state(plan, started), indent=2))
    tmp.replace(path)


def _mark_stopped(plan: Plan) -> None:
    path = plan.workdir / STATE
    if path.exists():
        state = json.loads(path.read_text())
        state["running"] = False
        path.write_text(json.dumps(state, indent=2))


def _summary(plan: Plan) -> str:
    a = plan.addresses
    lines = [
        f"stack: up in {plan.workdir} (stack.json, logs/)",
        f"  nsqlookupd http://{a.lookupd_http}   nsqadmin http://{a.nsqadmin_http}",
        "  nsqd " + "  ".join(f"tcp {n['tcp']} http {n['http']}" for n in a.nsqd),
        f"  drop .jsonl files into {plan.inbox}; results appear in {plan.outbox}",
        f"  OpenAI Batch API {a.gateway} (docs/batch-api.md)",
    ]
    if a.simulator:
        lines.append(f"  simulator {a.simulator}")
    if a.prometheus:
        lines.append(f"  prometheus http://{a.prometheus}")
    lines.append("  Ctrl-C (or `gpt4batch stack down`) stops it")
    return "\n".join(lines)


def down(workdir: Path, timeout: float) -> int:
    """Ask the launcher to stop (it drains in order); stop leftovers by PID if it is gone."""
    path = workdir / STATE
    if not path.exists():
        print(f"gpt4batch stack: error: no {path}", file=sys.stderr)
        return 1
    state = json.loads(path.read_text())
    launcher = int(state["launcher_pid"])
    if pid_runs(launcher, "stack"):
        os.kill(launcher, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(launcher) and time.monotonic() < deadline:
            time.sleep(0.1)
    procs = state["processes"]
    for tier in STOP_TIERS:
        pids = [
            p["pid"]
            for p in procs
            if p["component"] in tier and pid_runs(p["pid"], Path(p["argv"][0]).name)
        ]
        if pids:
            stop_pids(pids, timeout=30.0)
    print("stack: down")
    return 0
