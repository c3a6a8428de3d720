"""End to end on `gpt4batch stack up`: real NSQ, the four services, the simulator and Prometheus.

Given a stack with Prometheus, when a batch is dropped into the inbox, then
the outbox gets one line per record and every expression of the Grafana
dashboard returns data. Given two nsqd nodes and two callers, when half the
asks go to each node, then both callers work and each record lands once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpt4batch.services.sink.elsewhere import FILE_NAME
from tests.deploy.stack_support import running_stack, wait_for

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/dashboards/gpt4batch.json"

FAST_CALLER = {
    "GPT4BATCH_QPS": "0",
    "GPT4BATCH_RETRY_BASE_DELAY": "0.05",
    "GPT4BATCH_RETRY_MAX_DELAY": "0.2",
    "GPT4BATCH_SHUTDOWN_GRACE": "5",
}

pytestmark = pytest.mark.timeout(180)


def records(n: int, draw_at: int | None = None) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        asks = [{"id": f"q{j}", "content": f"question {i}.{j}"} for j in range(3)]
        if i == draw_at:
            asks[0]["content"] = "draw a small red square"
        out.append({"id": f"rec-{i}", "asks": asks})
    return out


def output_lines(outbox: Path, batch_prefix: str) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for path in outbox.glob(f"{batch_prefix}*.jsonl"):
        side = (".downloads.jsonl", ".journal.jsonl", ".rejects.jsonl")
        if not path.name.endswith(side):
            lines += [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    return lines


def batch_api_round_trip(stack: dict[str, Any]) -> None:
    """The stack's Batch API gateway answers the official SDK (and feeds its dashboard row)."""
    from openai import OpenAI

    key = Path(stack["addresses"]["gateway_api_key_file"]).read_text().strip()
    client = OpenAI(base_url=stack["addresses"]["gateway"], api_key=key, max_retries=2)
    lines = [
        {
            "custom_id": f"api-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"hi {i}"}]},
        }
        for i in range(3)
    ]
    data = "".join(json.dumps(x) + "\n" for x in lines).encode()
    uploaded = client.files.create(file=("api.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )

    def finished() -> bool:
        return client.batches.retrieve(batch.id).status in ("completed", "failed", "cancelled")

    logs = Path(stack["logs"])
    wait_for("the Batch API batch", finished, 60, logs)
    done = client.batches.retrieve(batch.id)
    assert done.status == "completed" and done.request_counts.total == 3, done
    assert (
        client.files.content(done.output_file_id).text.count("\n") == done.request_counts.completed
    )
    # The file sink beside the gateway leaves the gateway's batch to it (issue 20): no file
    # for it in the outbox, only its id among the batches finished elsewhere.
    outbox = Path(stack["outbox"])
    handed_over = outbox / FILE_NAME

    def left_alone() -> bool:
        named = [p for p in outbox.iterdir() if p.name.startswith(batch.id)]
        return handed_over.exists() and batch.id in handed_over.read_text() and not named

    wait_for("the file sink to leave the gateway's batch alone", left_alone, 30, logs)


def dashboard_expressions() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10
    return exprs


def query(prometheus: str, expr: str) -> list[Any]:
    resp = httpx.get(f"http://{prometheus}/api/v1/query", params={"query": expr}, timeout=5)
    resp.raise_for_status()
    return resp.json()["data"]["result"]


def test_a_batch_through_the_stack_and_every_dashboard_expression_has_data(
    tmp_path: Path,
) -> None:
    with running_stack(
        tmp_path,
        "--with-simulator",
        "--with-prometheus",
        "--scrape-interval=1s",
        "--simulator-arg=--fault-5xx=0.1",
        "--simulator-arg=--seed=7",
        env=FAST_CALLER,
    ) as stack:
        logs = Path(stack["logs"])
        staging = tmp_path / "batch.jsonl.part"
        staging.write_text("".join(json.dumps(r) + "\n" for r in records(30, draw_at=4)))
        staging.rename(Path(stack["inbox"]) / "batch.jsonl")  # drop it in atomically

        outbox = Path(stack["outbox"])
        wait_for("30 output lines", lambda: len(output_lines(outbox, "batch")) >= 30, 90, logs)
        wait_for("batch marked done", lambda: list(outbox.glob("batch*.done")), 30, logs)
        assert (Path(stack["processed"]) / "batch.jsonl").exists()
        lines = output_lines(outbox, "batch")
        assert sorted(r["id"] for r in lines) == sorted(f"rec-{i}" for i in range(30))
        assert list(Path(stack["downloads"]).iterdir()), "the draw record produced no file"

        batch_api_round_trip(stack)

        prometheus = stack["addresses"]["prometheus"]
        exprs = dashboard_expressions()

        def empty() -> list[str]:
            return [e for e in exprs if not query(prometheus, e)]

        try:  # rates need two scrapes after the last change
            wait_for("every expression", lambda: not empty(), 20, logs)
        except AssertionError:
            raise AssertionError(f"dashboard expressions without data: {empty()}") from None


def test_two_nsqd_nodes_and_two_callers_share_one_batch(tmp_path: Path) -> None:
    with running_stack(
        tmp_path,
        "--with-simulator",
        "--nsqd=2",
        "--callers=2",
        "--simulator-arg=--latency-ms=30",
        env=FAST_CALLER,
    ) as stack:
        logs = Path(stack["logs"])
        prefix = stack["topic_prefix"]
        nodes = [n["http"] for n in stack["addresses"]["nsqd"]]

        def callers_connected_to_both() -> bool:
            for node in nodes:
                stats = httpx.get(
                    f"http://{node}/stats", params={"format": "json", "topic": f"{prefix}.asks"}
                ).json()
                chans = [c for t in stats["topics"] for c in t["channels"]]
                if not any(c["channel_name"] == "caller" and c["client_count"] == 2 for c in chans):
                    return False
            return True

        wait_for("both callers on both nsqd", callers_connected_to_both, 30, logs)

        batch, n = "scaleout", 40
        for i, record in enumerate(records(n)):
            body = {"v": 1, "batch": batch, "seq": i, "record": record}
            node = nodes[i % 2]  # half the asks to each nsqd
            httpx.post(
                f"http://{node}/pub", params={"topic": f"{prefix}.asks"}, json=body
            ).raise_for_status()
        manifest = {"v": 1, "batch": batch, "total": n}
        httpx.post(
            f"http://{nodes[0]}/pub", params={"topic": f"{prefix}.batches"}, json=manifest
        ).raise_for_status()

        outbox = Path(stack["outbox"])
        wait_for(f"{n} output lines", lambda: len(output_lines(outbox, batch)) >= n, 60, logs)
        wait_for("batch marked done", lambda: list(outbox.glob(f"{batch}*.done")), 30, logs)
        ids = [r["id"] for r in output_lines(outbox, batch)]
        assert sorted(ids) == sorted(f"rec-{i}" for i in range(n))  # each exactly once

        worked = {}
        for proc in stack["processes"]:
            if proc["component"] == "caller":
                metrics = httpx.get(f"http://127.0.0.1:{proc['metrics_port']}/metrics").text
                worked[proc["name"]] = sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in metrics.splitlines()
                    if line.startswith("gpt4batch_caller_records_total{")
                )
        assert len(worked) == 2 and all(v > 0 for v in worked.values()), worked
