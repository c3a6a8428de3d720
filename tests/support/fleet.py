"""Several callers over several nsqd, fed asks directly, measured at the simulator.

Used by the fleet-limit tests and `bench/scale_out.py`:

    with nsq_cluster(workdir, nodes=2) as (lookupd, nodes):
        prefix = "fleet1"
        feed_asks(nodes, prefix, 600)                  # split across the nodes
        with ServiceProcs(workdir, caller_flags(lookupd, nodes[0], prefix, mock)) as procs:
            procs.start("caller-1", "caller", "--qps", "20")
            rate = CallRate(mock).measure(5.0)
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from gpt4batch.common.messages import AskMessage, Record
from gpt4batch.common.topics import Channels, Topics
from tests.support.mock_upstream import MockUpstream
from tests.support.nsq_servers import Nsqd, Nsqlookupd, run_nsqd, run_nsqlookupd


@contextmanager
def nsq_cluster(workdir: Path, nodes: int = 2) -> Iterator[tuple[Nsqlookupd, list[Nsqd]]]:
    workdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        lookupd = stack.enter_context(run_nsqlookupd(workdir))
        servers = [
            stack.enter_context(run_nsqd(workdir, lookupd, name=f"nsqd{i}")) for i in range(nodes)
        ]
        yield lookupd, servers


def feed_asks(nodes: Sequence[Nsqd], prefix: str, count: int, batch: str = "fleet") -> None:
    """`count` one-ask conversations, split evenly over `nodes` (channels created first)."""
    topics = Topics(prefix)
    bodies = [
        AskMessage(
            batch=batch,
            seq=i,
            record=Record.model_validate({"id": f"r{i}", "asks": [{"id": "a", "content": "hi"}]}),
        ).model_dump_json(exclude_none=True)
        for i in range(count)
    ]
    with httpx.Client(timeout=30) as http:
        for n, node in enumerate(nodes):
            base = f"http://{node.http_address}"
            for topic, channel in ((topics.asks, Channels.CALLER), (topics.results, "sink")):
                http.post(f"{base}/topic/create", params={"topic": topic}).raise_for_status()
                http.post(
                    f"{base}/channel/create", params={"topic": topic, "channel": channel}
                ).raise_for_status()
            mine = bodies[n :: len(nodes)]
            for i in range(0, len(mine), 500):
                payload = "\n".join(mine[i : i + 500]).encode()
                http.post(f"{base}/mpub", params={"topic": topics.asks}, content=payload)


def caller_flags(
    lookupd: Nsqlookupd, publish_to: Nsqd, prefix: str, mock: MockUpstream
) -> list[str]:
    return [
        "--lookupd-http-address", lookupd.http_address,
        "--nsqd-tcp-address", publish_to.tcp_address,
        "--topic-prefix", prefix,
        "--base-url", mock.url, "--access-token", mock.token,
        "--shutdown-grace", "2",
        "--retries", "0",
    ]  # fmt: skip


class CallRate:
    """Upstream calls/s as the simulator counts them."""

    def __init__(self, mock: MockUpstream) -> None:
        self.mock = mock

    def total(self) -> int:
        return int(self.mock.stats()["total_calls"])

    def measure(self, seconds: float) -> float:
        c0, t0 = self.total(), time.monotonic()
        time.sleep(seconds)
        c1, t1 = self.total(), time.monotonic()
        return (c1 - c0) / (t1 - t0)

    def wait_until(self, rate: float, window: float, timeout: float) -> float:
        """Seconds until the rate over a sliding `window` reaches `rate` (raises on timeout)."""
        start = time.monotonic()
        samples: list[tuple[float, int]] = []
        while time.monotonic() - start < timeout:
            now = time.monotonic()
            samples.append((now, self.total()))
            while len(samples) > 1 and samples[0][0] < now - window:
                samples.pop(0)
            (t0, c0), (t1, c1) = samples[0], samples[-1]
            if t1 - t0 >= 0.8 * window and (c1 - c0) / (t1 - t0) >= rate:
                return t1 - start
            time.sleep(0.1)
        raise AssertionError(f"calls/s never reached {rate} within {timeout}s")
