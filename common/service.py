"""The one app runner: every gpt4batch process is parts hosted on one bus.

A process is an `App`: *parts* (consumers that `register(bus)` their handlers,
HTTP servers, anything with async `start()` / `close()`) and optionally a
*main* job (a producer such as ingest) whose return value is the exit code.
`run_app` does what every process needs exactly once: flags → settings (exit
2 naming the flag), logging, the metrics endpoint, the NSQ bus (exit 1 when it
cannot connect), SIGTERM/SIGINT (stop taking work, drain for the grace, a
second signal exits at once) and the exit code.

Parts never touch pynsq: `register` gets a `Bus`, so the same service runs on
NSQ or in-process on a `MemoryBus` (the embedded `gpt4batch run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from gpt4batch.common import logging as glog
from gpt4batch.common.bus import Bus
from gpt4batch.common.credentials import warn_secrets_in_argv
from gpt4batch.common.errors import BusError, ConfigError
from gpt4batch.common.metrics import serve_metrics
from gpt4batch.common.module_names import ModuleLoadedTwice, check_one_name_per_module
from gpt4batch.common.settings import BaseServiceSettings, CliParser, add_flags, load

S = TypeVar("S", bound=BaseServiceSettings)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ABORTED = 0, 1, 2, 130

log = glog.get_logger("gpt4batch")


@runtime_checkable
class Service(Protocol):
    """A part that consumes: it subscribes its handlers when given the bus."""

    name: str

    def register(self, bus: Bus) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


#: A producer's job: runs on the started bus until done (or until `stop` is set);
#: its return value is the process's exit code.
MainJob = Callable[[Bus, asyncio.Event], Awaitable[int]]

#: One stage of a process's shutdown, given its bus (see `App.stop_order`).
StopStage = Callable[[Bus], Awaitable[None]]


def stop_bus(grace: float) -> StopStage:
    """The stage every process ends with: stop taking messages, let in-flight ones finish
    for `grace` s, requeue the rest."""

    async def stage(bus: Bus) -> None:
        await bus.stop(grace)

    return stage


@dataclass
class App:
    """What one process runs: its parts and, for producers, a main job."""

    parts: list[Any] = field(default_factory=list)
    main: MainJob | None = None
    #: Seconds a signalled main job may take to end by itself before it is cancelled
    #: (None: the settings' shutdown grace). 0 suits jobs that resume where they stopped.
    main_grace: float | None = None
    #: A staged shutdown: the stages `host` runs in order, once the bus has started, when
    #: the main job ends or `stop` is set, before the parts close (`stop_bus` among them).
    #: None: every service's one stage, `stop_bus(grace)`.
    stop_order: Sequence[StopStage] | None = None


class HttpServer:
    """A tornado application as an app part; `port` 0 picks a free one (see `.port`).
    `server_class` is tornado's HTTPServer or a subclass; `server_kwargs` go to it."""

    def __init__(
        self,
        app: Any,
        port: int,
        host: str = "0.0.0.0",
        server_class: Any = None,
        **server_kwargs: Any,
    ) -> None:
        self.app = app
        self.port = port
        self.host = host
        self.server_class = server_class
        self.server_kwargs = server_kwargs
        self._server: Any = None

    async def start(self) -> None:
        from tornado.httpserver import HTTPServer
        from tornado.netutil import bind_sockets

        try:
            sockets = bind_sockets(self.port, self.host, family=socket.AF_INET)
        except OSError as exc:  # the operator's --host/--port: one line, exit 2
            raise ConfigError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}") from None
        self.port = sockets[0].getsockname()[1]
        self._server = (self.server_class or HTTPServer)(self.app, **self.server_kwargs)
        self._server.add_sockets(sockets)
        log.info("listening", url=f"http://{self.host}:{self.port}")

    async def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.close_all_connections(), 5)
            self._server = None


def parse_settings(
    prog: str,
    description: str,
    settings_cls: type[S],
    argv: Sequence[str] | None,
    short: dict[str, str] | None = None,
    skip: frozenset[str] = frozenset(),
) -> S:
    """Flags → settings; exits 2 with the flag named when something is wrong."""
    parser = CliParser(prog=prog, description=description)
    add_flags(parser, settings_cls, short=short, skip=skip)
    args = parser.parse_args(argv)
    warn_secrets_in_argv(prog, sys.argv[1:] if argv is None else argv)
    try:
        return load(settings_cls, args)
    except ConfigError as exc:
        parser.exit(EXIT_USAGE, f"{prog}: error: {exc}\n")


def install_stop_signals(
    stop: asyncio.Event,
    *,
    on_stop: Callable[[], None] | None = None,
    on_abort: Callable[[], None] | None = None,
) -> None:
    """SIGTERM/SIGINT set `stop` (after `on_stop`, default: a log line); a second one
    calls `on_abort` (default: exit 130 at once)."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            if on_abort is not None:
                on_abort()
            log.warning("second signal, exiting now", signal=signum)
            sys.exit(EXIT_ABORTED)
        if on_stop is not None:
            on_stop()
        else:
            log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


#: `asyncio` runs processes on the standard library's loop instead of uvloop.
EVENT_LOOP_ENV = "GPT4BATCH_EVENT_LOOP"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop every gpt4batch process runs on: uvloop unless `GPT4BATCH_EVENT_LOOP`
    is `asyncio` (None: the standard loop).

    tornado, pynsq and aiohttp all run on the asyncio loop API; uvloop's C loop and
    transports cost less CPU per message (docs/benchmarks.md has the measurement).
    """
    choice = os.environ.get(EVENT_LOOP_ENV, "uvloop").strip().lower()
    if choice == "asyncio":
        return None
    if choice != "uvloop":
        raise ConfigError(f"{EVENT_LOOP_ENV}: unknown event loop {choice!r} (uvloop or asyncio)")
    import uvloop

    return uvloop.new_event_loop


#: Allocations (net of frees) that start a young-generation collection (CPython: 700).
#: A message's handling makes and drops hundreds of objects: at 700 a collection ran every
#: few messages, scanning what was in flight (~20 µs CPU per record in the caller,
#: bench/caller_cpu.py); at 20,000 almost none runs, and cyclic garbage waits a little
#: longer.
GC_YOUNG_THRESHOLD = 20_000


_steady_gc = False


@contextlib.contextmanager
def steady_gc() -> Iterator[None]:
    """While a process runs: what it imported is frozen out of the collector's scans
    (it lives as long as the process; `freeze_start_up` adds what its parts made while
    starting) and young collections start less often."""
    global _steady_gc
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(before[0], GC_YOUNG_THRESHOLD), *before[1:])
    _steady_gc = True
    try:
        yield
    finally:
        _steady_gc = False
        gc.set_threshold(*before)
        gc.unfreeze()


def freeze_start_up() -> None:
    """Freeze what has been made so far (parts started: pydantic schemas built on first
    use, connections, caches), inside `steady_gc` only: a shared process such as a test
    run is left alone."""
    if _steady_gc:
        gc.freeze()


def run_process(main: Callable[[], Awaitable[int]]) -> int:
    """Run a process's async main to its exit code (130 on a Ctrl-C outside the loop);
    1 without running it if a module is loaded under two names (common/module_names.py)."""
    try:
        factory = loop_factory()
    except ConfigError as exc:
        print(f"gpt4batch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        check_one_name_per_module()
    except ModuleLoadedTwice as exc:
        print(f"gpt4batch: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        with steady_gc(), asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(main())  # type: ignore[arg-type]
    except KeyboardInterrupt:
        return EXIT_ABORTED


async def host(app: App, bus: Bus, stop: asyncio.Event, grace: float) -> int:
    """Start `app`'s parts on `bus`, run until its main job ends or `stop` is set,
    then run its stop order (default: drain the bus for `grace` s) and close the parts
    (last started, first closed)."""
    started: list[Any] = []
    stop_order: Sequence[StopStage] = [stop_bus(grace)]  # until the bus has started
    try:
        for part in app.parts:
            await part.start()
            started.append(part)
            if isinstance(part, Service):
                part.register(bus)
        if not await start_unless_stopped(bus, stop):
            return EXIT_OK if app.main is None else EXIT_ABORTED
        if app.stop_order is not None:
            stop_order = app.stop_order
        freeze_start_up()
        if app.main is None:
            await stop.wait()
            return EXIT_OK
        main_grace = grace if app.main_grace is None else app.main_grace
        return await _run_main(app.main(bus, stop), stop, main_grace)
    finally:
        try:
            for stage in stop_order:
                await stage(bus)
        finally:
            for part in reversed(started):
                await part.close()


async def start_unless_stopped(bus: Bus, stop: asyncio.Event) -> bool:
    """Start `bus`, however long nsqd and nsqlookupd take to appear, unless `stop` is set
    first (then False: a signal ends a process still waiting for them)."""
    starting = asyncio.ensure_future(bus.start())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
    if starting.cancelled():
        return False
    starting.result()  # its error, if it failed
    return True


async def _run_main(job: Awaitable[int], stop: asyncio.Event, grace: float) -> int:
    task = asyncio.ensure_future(job)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():  # signalled: a job that watches `stop` ends by itself
            await asyncio.wait({task}, timeout=grace)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return EXIT_ABORTED
        return task.result()
    finally:
        stopped.cancel()


def run_app(
    name: str,
    description: str,
    settings_cls: type[S],
    build: Callable[[S], App | Service],
    argv: Sequence[str] | None = None,
    *,
    short: dict[str, str] | None = None,
    skip: frozenset[str] = frozenset(),
    prog: str | None = None,
) -> int:
    """Entry point of `gpt4batch <name>`: settings, logging, metrics, bus, signals, exit code.

    `build` returns the `App` (or a lone consumer `Service`); a `ConfigError` it raises
    is the user's mistake: one line and exit 2.
    """
    prog = prog or f"gpt4batch {name}"
    settings = parse_settings(prog, description, settings_cls, argv, short, skip)
    glog.configure(settings.log_format, settings.log_level, service=name)

    async def main() -> int:
        try:
            built = build(settings)
            app = built if isinstance(built, App) else App(parts=[built])
            from gpt4batch.common.nsq.bus import NsqBus  # pynsq/tornado only when used

            bus: Bus = NsqBus(settings, service=name)
        except ConfigError as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        stop = asyncio.Event()
        install_stop_signals(stop)
        serve_metrics(settings.metrics_port, settings.metrics_host)
        log.info("starting", metrics_port=settings.metrics_port or None)
        try:
            code = await host(app, bus, stop, settings.shutdown_grace)
        except BusError as exc:
            log.error("bus failure", error=str(exc))
            return EXIT_FAILED
        except ConfigError as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        log.info("stopped", exit_code=code)
        return code

    return run_process(main)
