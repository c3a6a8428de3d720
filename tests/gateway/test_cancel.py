"""A cancel stops the spending at once (issue 22 item 7), measured: the official `openai`
SDK drives the gateway over real nsqd, a real caller at `-q 40` and the simulator.

Before the fix the gateway published up to `--window` 1000 asks at once, so a
300-line batch cancelled one second after create still ran all 300 calls. Now
the window is twice the callers' concurrency and the callers, told of the cancel
over the bus, finish the queued asks without calling: the calls stop with the
ones already running.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.gateway.test_openai_sdk import (
    TERMINAL,
    Gateway,
    create,
    jsonl,
    lines_of,
    request,
    start_caller,
    upload,
    wait_status,
)
from tests.support.mock_upstream import MockUpstream
from tests.support.nsq_servers import Nsqd, Nsqlookupd, run_nsqd
from tests.support.pipeline import ServiceProcs, nsq_flags, wait_for

LINES = 300
CONCURRENCY = 16
QPS = 40
#: The issue's "a cancel is honoured within ~1 s": the notice's way (the cancel request,
#: the batch's lock, its status saved, nsqd, the caller) took 0.0 s in local runs and
#: 0.7 s once in CI; no call may begin later than this after the cancel was asked.
HONOURED_WITHIN = 1.5


def window_of(procs: ServiceProcs) -> int | None:
    """The window the gateway last logged (None: it has not followed the callers yet)."""
    windows = [
        e.get("window") for e in procs.log_events("gateway") if e.get("event") == "batch window"
    ]
    return windows[-1] if windows else None


def test_a_cancel_one_second_after_create_stops_the_calls(
    procs: ServiceProcs, nsqd: Nsqd, topic_prefix: str, tmp_path: Path
) -> None:
    with MockUpstream("--seed", "5", "--latency-ms", "400") as mock:
        # 16 at once x 400 ms: at most 40 calls/s, ~8 s for the 300 lines.
        start_caller(procs, mock, "--concurrency", str(CONCURRENCY), "--qps", str(QPS))
        gateway = Gateway(procs, tmp_path / "gw").start()  # no --window: from the fleet
        wait_for(lambda: window_of(procs) == 2 * CONCURRENCY, 60, "the window", procs.assert_alive)
        client = gateway.client()
        mock.reset()
        data = jsonl([request(f"r{i}", f"question {i}") for i in range(LINES)])
        batch = create(client, upload(client, data))
        created = time.monotonic()
        # ~1 s after create, and once the calls have begun (a loaded machine can be slower).
        wait_for(lambda: mock.stats()["first_call_at"], 60, "the first call", procs.assert_alive)
        time.sleep(max(0.0, created + 1.0 - time.monotonic()))
        at_cancel = mock.stats()["calls"].get("chat.completions", 0)
        cancel_at = time.time()
        cancelling = client.batches.cancel(batch.id)
        assert cancelling.status in ("cancelling", "cancelled")
        done = wait_status(client, batch.id, TERMINAL, procs, 120)
        time.sleep(1.0)  # a call that would come late has time to show
        stats = mock.stats()

    calls = stats["calls"].get("chat.completions", 0)
    after_cancel = stats["last_call_at"] - cancel_at
    print(
        f"\ncalls: {calls} of {LINES} ({at_cancel} begun at the cancel); the last began "
        f"{after_cancel:+.2f} s after the cancel; window {window_of(procs)}"
    )
    assert done.status == "cancelled" and done.cancelled_at, done
    # At most ~40 calls/s for the second before the cancel plus the 16 running then; the old
    # gateway (window 1000) ran every one of the 300.
    assert 1 <= calls <= 100, stats
    # Honoured within ~1 s: past the calls begun by then, only those the calls/s limit let
    # begin while the notice was on its way, and the asks the caller had taken.
    assert after_cancel <= HONOURED_WITHIN, (after_cancel, stats)
    assert calls <= at_cancel + QPS * max(after_cancel, 0.0) + CONCURRENCY, (at_cancel, stats)

    counts = done.request_counts
    output, errors = lines_of(client, done.output_file_id), lines_of(client, done.error_file_id)
    assert counts.total == LINES and counts.completed == len(output) == calls, counts
    assert counts.failed == 0, counts
    # The unrun requests are in the error file, as the real API has them, each once.
    assert len(errors) == LINES - calls
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    assert all(e["response"] is None for e in errors)
    ids = [line["custom_id"] for line in output + errors]
    assert sorted(ids) == sorted(f"r{i}" for i in range(LINES))
    for lines in (output, errors):  # each file in input order
        seqs = [int(line["custom_id"][1:]) for line in lines]
        assert seqs == sorted(seqs)


def caller_depth(nsqd: Nsqd, topic: str) -> int:
    """Messages waiting on the asks topic's caller channel (nsqd's /stats)."""
    stats = httpx.get(
        f"http://{nsqd.http_address}/stats", params={"format": "json", "topic": topic}, timeout=5
    ).json()
    return sum(
        channel["depth"]
        for found in stats.get("topics") or []
        for channel in found.get("channels") or []
        if channel["channel_name"] == "caller"
    )


def test_a_caller_started_after_the_cancel_makes_no_call(
    nsqlookupd: Nsqlookupd, topic_prefix: str, tmp_path: Path
) -> None:
    """The stop is announced again until the batch is over and a new caller listens before
    its first call: asks published before the cancel, with no caller running, are all
    answered `batch_cancelled` by a caller started afterwards, without one call. On an
    nsqd as deployed (`--mem-queue-size=0`): nothing announced before the caller came is
    kept for it."""
    lines, window = 40, 12
    with (
        run_nsqd(tmp_path, nsqlookupd, "--mem-queue-size=0", name="nsqd-disk") as nsqd,
        ServiceProcs(tmp_path, nsq_flags(nsqd, nsqlookupd, topic_prefix)) as procs,
        MockUpstream("--seed", "6") as mock,
    ):
        gateway = Gateway(procs, tmp_path / "gw", "--window", str(window)).start()
        client = gateway.client()
        data = jsonl([request(f"r{i}", f"question {i}") for i in range(lines)])
        batch = create(client, upload(client, data))
        asks = f"{topic_prefix}.asks"
        wait_for(lambda: caller_depth(nsqd, asks) == window, 60, "the window published")
        assert client.batches.cancel(batch.id).status == "cancelling"
        time.sleep(1.5)  # the first announcements reach no caller
        # Process scope: no fleet join hold to hide a call made before the stop is heard.
        start_caller(procs, mock, "--concurrency", "8", "--limit-scope", "process")
        done = wait_status(client, batch.id, TERMINAL, procs, 60)
        calls = mock.stats()["calls"].get("chat.completions", 0)
        errors = lines_of(client, done.error_file_id)
    assert done.status == "cancelled", done
    assert calls == 0
    counts = done.request_counts
    assert (counts.total, counts.completed, counts.failed) == (lines, 0, 0)
    assert done.output_file_id is None
    assert [e["custom_id"] for e in errors] == [f"r{i}" for i in range(lines)]
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
