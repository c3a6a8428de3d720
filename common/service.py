"""Running a consumer service as a process: flags, logging, metrics, bus, signals.

A service is an object with `register(bus)` (subscribe its handlers), and
async `start()` / `close()`. Its logic never touches pynsq: `register` gets a
`Bus`, so the same service runs on NSQ (`run_consumer_main`) or in-process on
a `MemoryBus` (the embedded `gpt4batch run`).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from gpt4batch.common import logging as glog
from gpt4batch.common.bus import Bus
from gpt4batch.common.errors import BusError, ConfigError
from gpt4batch.common.metrics import serve_metrics
from gpt4batch.common.nsq_bus import NsqBus
from gpt4batch.common.settings import BaseServiceSettings, CliParser, add_flags, load

S = TypeVar("S", bound=BaseServiceSettings)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class Service(Protocol):
    name: str

    def register(self, bus: Bus) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


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
    try:
        return load(settings_cls, args)
    except ConfigError as exc:
        parser.exit(EXIT_USAGE, f"{prog}: error: {exc}\n")


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGTERM/SIGINT set `stop`; a second one exits at once."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            glog.get_logger("gpt4batch").warning("second signal, exiting now", signal=signum)
            sys.exit(130)
        glog.get_logger("gpt4batch").info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


async def serve(service: Service, bus: Bus, stop: asyncio.Event, grace: float) -> None:
    """Run `service` on `bus` until `stop` is set, then drain and close."""
    await service.start()
    service.register(bus)
    await bus.start()
    try:
        await stop.wait()
    finally:
        await bus.stop(grace)
        await service.close()


def run_consumer_main(
    name: str,
    description: str,
    settings_cls: type[S],
    build: Callable[[S], Service],
    argv: Sequence[str] | None = None,
    short: dict[str, str] | None = None,
    skip: frozenset[str] = frozenset(),
) -> int:
    """Entry point of `gpt4batch <name>`: a long-running NSQ consumer (`skip`: flags it lacks)."""
    settings = parse_settings(f"gpt4batch {name}", description, settings_cls, argv, short, skip)
    glog.configure(settings.log_format, settings.log_level, service=name)
    log = glog.get_logger("gpt4batch")

    async def main() -> int:
        try:
            service = build(settings)
            bus = NsqBus(settings, service=name)
        except ConfigError as exc:
            print(f"gpt4batch {name}: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        stop = asyncio.Event()
        install_stop_signals(stop)
        serve_metrics(settings.metrics_port, settings.metrics_host)
        log.info("starting", metrics_port=settings.metrics_port or None)
        try:
            await serve(service, bus, stop, settings.shutdown_grace)
        except BusError as exc:
            log.error("bus failure", error=str(exc))
            return EXIT_FAILED
        log.info("stopped")
        return EXIT_OK

    return asyncio.run(main())
