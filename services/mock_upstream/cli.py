"""`gpt4batch mock-upstream`: run the simulator until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys

from tornado.httpserver import HTTPServer

from gpt4batch.common import logging as glog
from gpt4batch.services.mock_upstream.app import serve
from gpt4batch.services.mock_upstream.fast import serve_fast
from gpt4batch.services.mock_upstream.options import Options, parse


async def _run(options: Options) -> None:
    server: HTTPServer | asyncio.Server
    if options.fast:
        server, port = await serve_fast(options)
    else:
        server, port = await serve(options)
    host = f"[{options.host}]" if ":" in options.host else options.host
    # The first stdout line is machine-readable: tests and scripts read the URL from it.
    sys.stdout.write(f"listening http://{host}:{port}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if isinstance(server, asyncio.Server):
        server.close()
    else:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    glog.configure(options.log_format, "info", service="mock-upstream")
    try:
        asyncio.run(_run(options))
    except ValueError as exc:
        print(f"mock-upstream: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"mock-upstream: cannot listen on {options.host}:{options.port}: {exc}", file=sys.stderr
        )
        return 2
    return 0
