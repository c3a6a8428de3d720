"""Prometheus exporter of nsqd queue depths: reads every nsqd's `/stats` on each scrape.

No maintained NSQ exporter installs from our registries, so this small
collector does the one job we need: backlog per topic/channel and node.
nsqd nodes are given directly (`--nsqd-http-address`) or discovered through
nsqlookupd's `/nodes` (`--lookupd-http-address`) at every scrape, so a node
added by scaling out is picked up without a restart. The HTTP calls are those of
the one nsqd/nsqlookupd client, common/nsq/admin.py; every node is asked at once.

    python -m gpt4batch.common.nsq_exporter --lookupd-http-address 127.0.0.1:4161 \
        --metrics-port 9117
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from gpt4batch.common import logging as glog
from gpt4batch.common.errors import ConfigError
from gpt4batch.common.nsq.admin import find_nodes, node_stats
from gpt4batch.common.settings import ENV_PREFIX, CliParser, CommaList, add_flags, load
from gpt4batch.common.tls import client_context

PREFIX = "gpt4batch_nsq"
DEFAULT_PORT = 9117

#: The topic of ingest's batch traces (Topics.ingested): its channels carry no messages.
INGESTED_SUFFIX = ".ingested"

TOPIC_LABELS = ["node", "topic"]
CHANNEL_LABELS = ["node", "topic", "channel"]

T = TypeVar("T")


class ExporterSettings(BaseSettings):
    """Where the nsqd nodes are and where to serve /metrics."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    nsqd_http_address: CommaList = Field(
        default_factory=list, description="nsqd HTTP address host:port (repeatable)."
    )
    lookupd_http_address: CommaList = Field(
        default_factory=list,
        description="nsqlookupd HTTP address host:port (repeatable); its nodes are scraped.",
    )
    metrics_port: int = Field(DEFAULT_PORT, ge=1, le=65535, description="Port of /metrics.")
    metrics_host: str = Field(
        "127.0.0.1", description="Address /metrics listens on (0.0.0.0: other hosts too)."
    )
    scrape_timeout: float = Field(3.0, gt=0, description="HTTP timeout per nsqd (s).")
    log_format: str = Field("auto", description="Log format: json, console or auto.")
    log_level: str = Field("info", description="Log level.")


class NsqdStatsCollector(Collector):
    """One scrape = one `/nodes` query per nsqlookupd and one `/stats` per nsqd."""

    def __init__(
        self,
        nsqd_http: Sequence[str] = (),
        lookupd_http: Sequence[str] = (),
        timeout: float = 3.0,
    ) -> None:
        if not nsqd_http and not lookupd_http:
            raise ConfigError("give --nsqd-http-address or --lookupd-http-address")
        self.nsqd_http = list(nsqd_http)
        self.lookupd_http = list(lookupd_http)
        self.timeout = timeout
        self.log = glog.get_logger("gpt4batch.nsq_exporter")

    async def nodes(self, client: httpx.AsyncClient) -> list[str]:
        """HTTP addresses of the nsqd nodes: the given ones plus those nsqlookupd knows."""
        listed, problems = await find_nodes(client, (), (), self.lookupd_http)
        for problem in problems:
            self.log.warning("nsqlookupd query failed", problem=problem)
        return list(dict.fromkeys([*self.nsqd_http, *(node.http for node in listed)]))

    async def scrape(self) -> list[Metric]:
        """One scrape (for an async caller): every node's /stats, asked at once."""
        fams = _Families()
        async with httpx.AsyncClient(timeout=self.timeout, verify=client_context()) as client:
            nodes = await self.nodes(client)
            answers = await asyncio.gather(*(self._stats(client, node) for node in nodes))
        for node, stats in zip(nodes, answers, strict=True):
            fams.up.add_metric([node], 0 if stats is None else 1)
            if stats is not None:
                fams.add_stats(node, stats)
        return list(fams.all())

    async def _stats(self, client: httpx.AsyncClient, node: str) -> dict[str, Any] | None:
        try:
            return await node_stats(client, node)
        except (httpx.HTTPError, ValueError) as exc:
            self.log.warning("nsqd /stats failed", node=node, error=str(exc))
            return None

    def collect(self) -> Iterator[Metric]:
        """prometheus_client's scrape, which is synchronous (its HTTP server's thread)."""
        yield from run_to_end(self.scrape())


def run_to_end(work: Coroutine[Any, Any, T]) -> T:
    """`work`'s result, from synchronous code: on this thread when it runs no event loop
    (prometheus_client's server thread), else on a thread of its own, so a collect() called
    from async code (generate_latest in a handler) works rather than failing."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    with ThreadPoolExecutor(1, thread_name_prefix="nsq-exporter") as pool:
        return pool.submit(asyncio.run, work).result()


class _Families:
    """The metric families of one scrape."""

    def __init__(self) -> None:
        g, c = GaugeMetricFamily, CounterMetricFamily
        self.up = g(f"{PREFIX}_up", "1 if the nsqd node answered /stats.", labels=["node"])
        self.topic_depth = g(
            f"{PREFIX}_topic_depth",
            "Messages in a topic not yet copied to its channels (memory + disk).",
            labels=TOPIC_LABELS,
        )
        self.topic_messages = c(
            f"{PREFIX}_topic_messages",
            "Messages published to the topic on this node.",
            labels=TOPIC_LABELS,
        )
        self.depth = g(
            f"{PREFIX}_channel_depth",
            "Messages waiting to be sent to a consumer (memory + disk).",
            labels=CHANNEL_LABELS,
        )
        self.in_flight = g(
            f"{PREFIX}_channel_in_flight",
            "Messages sent to a consumer and not yet finished.",
            labels=CHANNEL_LABELS,
        )
        self.deferred = g(
            f"{PREFIX}_channel_deferred",
            "Requeued messages waiting for their delay.",
            labels=CHANNEL_LABELS,
        )
        self.backlog = g(
            f"{PREFIX}_channel_backlog",
            "Work not finished: depth + in flight + deferred.",
            labels=CHANNEL_LABELS,
        )
        self.clients = g(f"{PREFIX}_channel_clients", "Consumers connected.", labels=CHANNEL_LABELS)
        self.messages = c(
            f"{PREFIX}_channel_messages", "Messages put in the channel.", labels=CHANNEL_LABELS
        )
        self.requeued = c(
            f"{PREFIX}_channel_requeued", "Messages requeued by consumers.", labels=CHANNEL_LABELS
        )
        self.timed_out = c(
            f"{PREFIX}_channel_timed_out",
            "Messages redelivered because a consumer did not finish or touch them in time.",
            labels=CHANNEL_LABELS,
        )

    def add_stats(self, node: str, stats: dict[str, Any]) -> None:
        for topic in stats.get("topics") or []:
            name = str(topic["topic_name"])
            self.topic_depth.add_metric([node, name], float(topic.get("depth", 0)))
            self.topic_messages.add_metric([node, name], float(topic.get("message_count", 0)))
            if name.endswith(INGESTED_SUFFIX):
                continue  # one empty channel per batch ingested: series without end, all 0
            for ch in topic.get("channels") or []:
                labels = [node, name, str(ch["channel_name"])]
                depth = float(ch.get("depth", 0))
                in_flight = float(ch.get("in_flight_count", 0))
                deferred = float(ch.get("deferred_count", 0))
                self.depth.add_metric(labels, depth)
                self.in_flight.add_metric(labels, in_flight)
                self.deferred.add_metric(labels, deferred)
                self.backlog.add_metric(labels, depth + in_flight + deferred)
                self.clients.add_metric(labels, float(ch.get("client_count", 0)))
                self.messages.add_metric(labels, float(ch.get("message_count", 0)))
                self.requeued.add_metric(labels, float(ch.get("requeue_count", 0)))
                self.timed_out.add_metric(labels, float(ch.get("timeout_count", 0)))

    def all(self) -> Iterable[Metric]:
        return [
            self.up,
            self.topic_depth,
            self.topic_messages,
            self.depth,
            self.in_flight,
            self.deferred,
            self.backlog,
            self.clients,
            self.messages,
            self.requeued,
            self.timed_out,
        ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = CliParser(
        prog="python -m gpt4batch.common.nsq_exporter",
        description="Serve nsqd queue depths per topic/channel as Prometheus metrics.",
    )
    add_flags(parser, ExporterSettings)
    try:
        settings = load(ExporterSettings, parser.parse_args(argv))
        collector = NsqdStatsCollector(
            settings.nsqd_http_address, settings.lookupd_http_address, settings.scrape_timeout
        )
    except ConfigError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    glog.configure(settings.log_format, settings.log_level, service="nsq-exporter")
    registry = CollectorRegistry()
    registry.register(collector)
    start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)
    glog.get_logger("gpt4batch.nsq_exporter").info("serving", port=settings.metrics_port)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
