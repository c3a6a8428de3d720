"""The nsqd /stats collector against a real nsqd registered with a real nsqlookupd."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import httpx
from prometheus_client import CollectorRegistry, generate_latest

from gpt4batch.common.nsq_exporter import NsqdStatsCollector
from tests.support.nsq_servers import Nsqd, Nsqlookupd, free_port, stop_pid, wait_http


def _samples(collector: NsqdStatsCollector) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in collector.collect():
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _prepare(nsqd: Nsqd, topic: str, messages: int) -> None:
    base = f"http://{nsqd.http_address}"
    httpx.post(f"{base}/topic/create", params={"topic": topic}).raise_for_status()
    httpx.post(
        f"{base}/channel/create", params={"topic": topic, "channel": "work"}
    ).raise_for_status()
    for i in range(messages):
        httpx.post(f"{base}/pub", params={"topic": topic}, content=f"m{i}").raise_for_status()


def test_backlog_per_channel_from_a_directly_given_nsqd(nsqd: Nsqd, topic_prefix: str) -> None:
    topic = f"{topic_prefix}.asks"
    _prepare(nsqd, topic, 5)

    samples = _samples(NsqdStatsCollector(nsqd_http=[nsqd.http_address]))

    labels = frozenset({"node": nsqd.http_address, "topic": topic, "channel": "work"}.items())
    assert samples[("gpt4batch_nsq_up", frozenset({"node": nsqd.http_address}.items()))] == 1
    assert samples[("gpt4batch_nsq_channel_depth", labels)] == 5
    assert samples[("gpt4batch_nsq_channel_backlog", labels)] == 5
    assert samples[("gpt4batch_nsq_channel_messages_total", labels)] == 5
    assert samples[("gpt4batch_nsq_channel_in_flight", labels)] == 0


def test_the_batch_traces_of_ingest_add_no_channel_series(nsqd: Nsqd, topic_prefix: str) -> None:
    """Ingest leaves one empty channel per batch on `<prefix>.ingested`: exporting each
    would add series without end (8 per batch and node), all 0."""
    topic = f"{topic_prefix}.ingested"
    _prepare(nsqd, topic, 0)

    samples = _samples(NsqdStatsCollector(nsqd_http=[nsqd.http_address]))

    assert not [key for key in samples if ("topic", topic) in key[1] and "channel" in dict(key[1])]
    topic_labels = frozenset({"node": nsqd.http_address, "topic": topic}.items())
    assert ("gpt4batch_nsq_topic_depth", topic_labels) in samples


def test_nodes_are_discovered_through_nsqlookupd(
    nsqd: Nsqd, nsqlookupd: Nsqlookupd, topic_prefix: str
) -> None:
    _prepare(nsqd, f"{topic_prefix}.results", 2)
    collector = NsqdStatsCollector(lookupd_http=[nsqlookupd.http_address])

    async def nodes() -> list[str]:
        async with httpx.AsyncClient() as client:
            return await collector.nodes(client)

    assert asyncio.run(nodes()) == [nsqd.http_address]


def test_a_scrape_from_async_code_works(nsqd: Nsqd, topic_prefix: str) -> None:
    """collect() called inside a running event loop (generate_latest in an async handler)
    still scrapes, and an async caller can await scrape() itself."""
    topic = f"{topic_prefix}.asks"
    _prepare(nsqd, topic, 2)
    collector = NsqdStatsCollector(nsqd_http=[nsqd.http_address])
    labels = frozenset({"node": nsqd.http_address, "topic": topic, "channel": "work"}.items())

    async def inside_a_loop() -> tuple[float, list[str]]:
        samples = _samples(collector)
        awaited = [family.name for family in await collector.scrape()]
        return samples[("gpt4batch_nsq_channel_depth", labels)], awaited

    depth, awaited = asyncio.run(inside_a_loop())
    assert depth == 2
    assert "gpt4batch_nsq_channel_backlog" in awaited


def test_an_unreachable_node_is_reported_down() -> None:
    dead = f"127.0.0.1:{free_port()}"
    samples = _samples(NsqdStatsCollector(nsqd_http=[dead], timeout=0.5))
    assert samples == {("gpt4batch_nsq_up", frozenset({"node": dead}.items())): 0}


def test_exposition_has_counter_names_ending_in_total(nsqd: Nsqd, topic_prefix: str) -> None:
    _prepare(nsqd, f"{topic_prefix}.downloads", 1)
    registry = CollectorRegistry()
    registry.register(NsqdStatsCollector(nsqd_http=[nsqd.http_address]))
    text = generate_latest(registry).decode()
    assert "gpt4batch_nsq_channel_requeued_total{" in text
    assert "gpt4batch_nsq_channel_timed_out_total{" in text


def test_runs_as_a_process_serving_metrics(nsqlookupd: Nsqlookupd, nsqd: Nsqd) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gpt4batch.common.nsq_exporter",
            "--lookupd-http-address",
            nsqlookupd.http_address,
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/metrics", proc=proc)
        body = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert f'gpt4batch_nsq_up{{node="{nsqd.http_address}"}} 1.0' in body
    finally:
        stop_pid(proc)
    assert proc.returncode == 0


def test_refuses_to_start_without_an_address() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "gpt4batch.common.nsq_exporter"],
        capture_output=True,
        text=True,
        env={"PATH": ""},
    )
    assert run.returncode == 2
    assert "--lookupd-http-address" in run.stderr
