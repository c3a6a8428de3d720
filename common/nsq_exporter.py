"""Prometheus exporter of nsqd queue depths: reads every nsqd's `/stats` on each scrape.

No maintained NSQ exporter installs from our registries, so this small
collector does the one job we need: backlog per topic/channel and node.
nsqd nodes are given directly (`--nsqd-http-address`) or discovered through
nsqlookupd's `/nodes` (`--lookupd-http-address`) at every scrape, so a node
added by scaling out is picked up without a restart.

    python -m gpt4batch.common.nsq_exporter --lookupd-http-address 127.0.0.1:4161 \
        --metrics-port 9117
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from gpt4batch.common import logging as glog
from gpt4batch.common.errors import ConfigError
from gpt4batch.common.nsq.admin import http_url, node_addresses
from gpt4batch.common.settings import ENV_PREFIX, CliParser, CommaList, add_flags, load

PREFIX = "gpt4batch_nsq"
DEFAULT_PORT = 9117

#: The topic of ingest's batch traces (Topics.ingested): its channels carry no messages.
INGESTED_SUFFIX = ".ingested"

TOPIC_LABELS = ["node", "topic"]
CHANNEL_LABELS = ["node", "topic", "channel"]


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

    def nodes(self, client: httpx.Client) -> list[str]:
        """HTTP addresses of the nsqd nodes: the given ones plus those nsqlookupd knows."""
        found = list(self.nsqd_http)
        for lookupd in self.lookupd_http:
            try:
                resp = client.get(http_url(lookupd, "/nodes"))
                resp.raise_for_status()
                node_addresses(resp.json(), "http_port", found)
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                self.log.warning("nsqlookupd query failed", address=lookupd, error=str(exc))
        return found

    def collect(self) -> Iterator[Metric]:
        fams = _Families()
        with httpx.Client(timeout=self.timeout) as client:
            for node in self.nodes(client):
                try:
                    resp = client.get(http_url(node, "/stats"), params={"format": "json"})
                    resp.raise_for_status()
                    stats = resp.json()
                except (httpx.HTTPError, ValueError) as exc:
                    self.log.warning("nsqd /stats failed", node=node, error=str(exc))
                    fams.up.add_metric([node], 0)
                    continue
                fams.up.add_metric([node], 1)
                fams.add_stats(node, stats)
        yield from fams.all()


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
