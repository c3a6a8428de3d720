"""The ceiling under everything: raw pynsq consume with a handler that only FINs.

    .venv/bin/python bench/raw_nsq_consume.py --messages 100000

Fills a topic through nsqd's HTTP /mpub, then times a bare `nsq.Reader`
(max_in_flight 2500, auto-FIN) from its first message to the last. The
pipeline's records/s is reported as a share of this figure, measured in the
same run on the same machine (bench/table.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.nsq_servers import run_nsqd

BODY = json.dumps({"v": 1, "batch": "bench", "seq": 0, "record": {"id": "r", "asks": []}})


def fill(http_address: str, topic: str, messages: int, chunk: int = 10_000) -> None:
    with httpx.Client(timeout=60) as client:
        left = messages
        while left:
            n = min(chunk, left)
            body = "\n".join([BODY] * n).encode()
            client.post(f"http://{http_address}/mpub?topic={topic}", content=body)
            left -= n


def consume(tcp_address: str, topic: str, messages: int, max_in_flight: int) -> float:
    """Messages/s of a bare pynsq Reader, first message to last."""
    import nsq
    from tornado.ioloop import IOLoop

    seen = 0
    first = 0.0
    last = 0.0

    def handler(message: nsq.Message) -> bool:
        nonlocal seen, first, last
        if seen == 0:
            first = time.perf_counter()
        seen += 1
        if seen == messages:
            last = time.perf_counter()
            IOLoop.current().add_callback(IOLoop.current().stop)
        return True

    nsq.Reader(
        topic=topic,
        channel="raw",
        message_handler=handler,
        nsqd_tcp_addresses=[tcp_address],
        max_in_flight=max_in_flight,
        max_tries=0,
    )
    loop = IOLoop.current()
    loop.call_later(120, loop.stop)
    loop.start()
    if seen < messages:
        raise RuntimeError(f"raw consume saw {seen} of {messages} messages")
    return (messages - 1) / (last - first)


def measure(messages: int = 100_000, max_in_flight: int = 2500) -> float:
    with tempfile.TemporaryDirectory(prefix="raw-nsq-") as tmp, run_nsqd(Path(tmp), None) as nsqd:
        httpx.post(f"http://{nsqd.http_address}/channel/create?topic=raw&channel=raw")
        fill(nsqd.http_address, "raw", messages)
        return consume(nsqd.tcp_address, "raw", messages, max_in_flight)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--max-in-flight", type=int, default=2500)
    args = parser.parse_args()
    rate = measure(args.messages, args.max_in_flight)
    print(f"raw pynsq consume: {args.messages} messages, {rate:,.0f} msg/s")


if __name__ == "__main__":
    main()
