"""Two accounts with different limits, one `run -n` over them: each within its own QPS
(and TPM, where the caller has --tpm), together near the sum.

    .venv/bin/python bench/accounts.py [--records 900] [--qps-a 20] [--qps-b 10]

The simulator accepts both tokens and counts calls per key; it is sampled every
0.2 s. Per account: the most calls in any 5-s span of samples ÷ (5 × its QPS)
(target ≤ 1.02) and its mean rate over the steady part (after the first 2 s,
before the last 2 s); together: the steady rate ÷ the sum of the QPS (target
≥ 0.95). The last line is the summary `make bench` shows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from bench.support import write_records
from gpt4batch.services.mock_upstream.keys import key_id
from tests.support.mock_upstream import MockUpstream
from tests.support.nsq_servers import run_nsqd

TOKENS = {"a": "sk-bench-account-a", "b": "sk-bench-account-b"}
SPAN = 5.0  # seconds the max rate is judged over (a 1-s count is ±1 call of noise)
EDGE = 2.0  # seconds left out at each end of the steady part


def sample(url: str, keys: dict[str, str], stop: threading.Event, out: list) -> None:
    """(time, {account: calls}) every 0.2 s until `stop`."""
    with httpx.Client(timeout=5) as http:
        while not stop.is_set():
            calls = http.get(f"{url}/stats").json()["key_calls"]
            out.append(
                (time.monotonic(), {n: calls.get(k, {}).get("calls", 0) for n, k in keys.items()})
            )
            stop.wait(0.2)


def max_rate(samples: list, name: str) -> float:
    best = 0.0
    for i, (t0, c0) in enumerate(samples):
        for t1, c1 in samples[i + 1 :]:
            if t1 - t0 >= SPAN:
                best = max(best, (c1[name] - c0[name]) / (t1 - t0))
                break
    return best


def steady_rate(samples: list, names: list[str]) -> float:
    moving = [(t, sum(c[n] for n in names)) for t, c in samples]
    first = next(t for t, total in moving if total > 0)
    last = next(t for t, total in reversed(moving) if total < moving[-1][1]) if moving else first
    window = [(t, total) for t, total in moving if first + EDGE <= t <= last - EDGE]
    if len(window) < 2:
        return 0.0
    return (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=900)
    p.add_argument("--qps-a", type=float, default=20)
    p.add_argument("--qps-b", type=float, default=10)
    args = p.parse_args()
    limits = {"a": args.qps_a, "b": args.qps_b}
    with tempfile.TemporaryDirectory(prefix="bench-accounts-") as tmp:
        work = Path(tmp)
        source = write_records(work / "in.jsonl", args.records)
        mock_args = ["--fast", "--token", TOKENS["a"], "--also-token", TOKENS["b"]]
        with MockUpstream(*mock_args, "--latency-ms", "100", "--jitter-ms", "100") as mock:
            accounts = [
                {"name": n, "token_env": f"BENCH_TOKEN_{n.upper()}", "base_url": mock.url,
                 "qps": limits[n], "concurrency": 100}
                for n in ("a", "b")
            ]  # fmt: skip
            (work / "accounts.json").write_text(json.dumps({"accounts": accounts}))
            env = {**os.environ, **{f"BENCH_TOKEN_{n.upper()}": t for n, t in TOKENS.items()}}
            samples: list = []
            stop = threading.Event()
            keys = {n: key_id(t) for n, t in TOKENS.items()}
            with run_nsqd(work / "nsq", None) as nsqd:
                sampler = threading.Thread(target=sample, args=(mock.url, keys, stop, samples))
                sampler.start()
                try:
                    run = subprocess.run(
                        [sys.executable, "-m", "gpt4batch.cli", "run", "-i", str(source), "-o",
                         str(work / "out.jsonl"), "--progress", "off", "-e", "false", "-n",
                         "--nsqd-tcp-address", nsqd.tcp_address, "-g", "100",
                         "--accounts", str(work / "accounts.json")],
                        env=env, capture_output=True, text=True, timeout=600,
                    )  # fmt: skip
                finally:
                    stop.set()
                    sampler.join()
            stats = mock.stats()
    if run.returncode != 0:
        print(run.stderr[-2000:], file=sys.stderr)
        print(f"(run exited {run.returncode})")
        return
    parts = []
    for name, q in limits.items():
        calls = stats["key_calls"][keys[name]]
        parts.append(
            f"{name} (q {q:g}): max {max_rate(samples, name) / q:.3f}·q over {SPAN:g} s, "
            f"max {calls['max_calls_in_1s']}/1 s, {calls['calls']} calls"
        )
    together = steady_rate(samples, list(limits)) / sum(limits.values())
    print("; ".join(parts) + f"; together {together:.3f} of the sum (steady part)")


if __name__ == "__main__":
    main()
