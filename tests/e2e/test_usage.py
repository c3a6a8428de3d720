"""Issue 21, usage and cost through the services over real nsqd: ingest -> caller -> sink
with the simulator. Every output line says its usage; the sink's ledger, `.done` marker
and `complete` manifest sum it; the caller's /metrics counts the same tokens and cost."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx

from gpt4batch.common.messages import BatchManifest
from gpt4batch.services.sink.ledger import read_ledger
from tests.e2e.test_pipeline import caller_flags, write_jsonl
from tests.support.mock_upstream import MockUpstream
from tests.support.nsq_servers import BIN
from tests.support.pipeline import ServiceProcs, read_jsonl, wait_for

PRICES = ["--input-usd-per-1m", "3", "--output-usd-per-1m", "15", "--usd-per-call", "0.002"]


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one series in a /metrics page (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match and ",".join(sorted((match[1] or "").split(","))) == want:
            return float(match[2])
    return 0.0


def test_usage_lines_ledger_done_manifest_and_metrics_agree(
    tmp_path: Path, nsqd: Any, nsqlookupd: Any, topic_prefix: str
) -> None:
    flags = [
        "--lookupd-http-address", nsqlookupd.http_address,
        "--nsqd-tcp-address", nsqd.tcp_address, "--topic-prefix", topic_prefix,
    ]  # fmt: skip
    records = [
        {"id": f"u{i}", "asks": [{"id": f"a{k}", "content": f"tell me {i}.{k}"} for k in range(2)]}
        for i in range(12)
    ]
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "usage.jsonl"
    tail = tmp_path / "batches.log"
    with MockUpstream("--seed", "9") as sim, ServiceProcs(tmp_path, flags) as procs:
        with tail.open("wb") as log:  # the sink's `complete` manifest, as published
            reader = subprocess.Popen(
                [str(BIN / "nsq_tail"), f"--nsqd-tcp-address={nsqd.tcp_address}",
                 f"--topic={topic_prefix}.batches", "-n", "2"],
                stdout=log, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                procs.start("caller", "caller", *caller_flags(sim, "--upstream", "openai"), *PRICES)
                procs.start("sink", "sink", "-o", str(out))
                procs.run_once("ingest", "ingest", "-i", str(source), "--batch", "usage")
                wait_for(out.with_name("usage.done").exists, 90, ".done", procs.assert_alive)
                page = httpx.get(
                    f"http://127.0.0.1:{procs.metrics_ports['caller']}/metrics", timeout=5
                ).text
                reader.wait(30)
            finally:
                if reader.poll() is None:
                    reader.kill()
        calls = sim.stats()["total_calls"]
    lines = read_jsonl(out)
    assert [r["id"] for r in lines] == [f"u{i}" for i in range(12)]
    prompt = completion = 0
    for line in lines:
        usage = line["usage"]
        reported = [a["usage"] for a in line["answers"]]
        assert usage["prompt_tokens"] == sum(u["prompt_tokens"] for u in reported) > 0
        assert usage["completion_tokens"] == sum(u["completion_tokens"] for u in reported) > 0
        assert usage["estimated"] is False
        prompt += usage["prompt_tokens"]
        completion += usage["completion_tokens"]
    assert calls == 24
    cost = prompt * 3 / 1e6 + completion * 15 / 1e6 + 24 * 0.002
    assert math.isclose(sum(r["usage"]["cost_usd"] for r in lines), cost, rel_tol=1e-9)

    ledger = read_ledger(out).usage
    assert (ledger.prompt_tokens, ledger.completion_tokens, ledger.records) == (
        prompt, completion, 12
    )  # fmt: skip
    assert math.isclose(ledger.cost_usd, cost, rel_tol=1e-9)
    done = json.loads(out.with_name("usage.done").read_text())["usage"]
    assert (done["prompt_tokens"], done["completion_tokens"]) == (prompt, completion)
    assert done["estimated"] is False and math.isclose(done["cost_usd"], cost, rel_tol=1e-6)
    manifests = [BatchManifest.model_validate_json(ln) for ln in tail.read_text().splitlines()]
    [complete] = [m for m in manifests if m.status == "complete"]
    assert complete.usage is not None
    assert (complete.usage.prompt_tokens, complete.usage.total_tokens) == (
        prompt, prompt + completion
    )  # fmt: skip

    assert metric(page, "gpt4batch_tokens_total", account="default", kind="prompt") == prompt
    assert (
        metric(page, "gpt4batch_tokens_total", account="default", kind="completion") == completion
    )
    assert math.isclose(
        metric(page, "gpt4batch_cost_usd_total", account="default"), cost, rel_tol=1e-6
    )
