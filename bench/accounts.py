"""Two accounts with different limits, one `run -n` over them: each within its own QPS
and TPM, together near the sum.

    .venv/bin/python bench/accounts.py [--records 900] [--qps-a 20] [--qps-b 10]
                                       [--tpm-a 6000] [--tpm-b 3000] [--tpm-records 300]

Phase 1 (QPS): gpt4api kind on the fast simulator, accounts at q 20 and 10.
Phase 2 (TPM, when the caller has `--tpm`): OpenAI kind, accounts at 6,000 and
3,000 tokens, counted over a 10-s window on both sides (`--tpm-window 10`: a
minute's window would take minutes), answers of ~100 tokens. The simulator
counts calls and tokens per key; it is sampled every 0.2 s. Per account: the
most calls in any 5-s span ÷ (5 × q), and the simulator's exact most tokens in
any window ÷ T (targets ≤ 1.02); together: the steady rate (after the first 2 s,
before the last 2 s) ÷ the sum of the limits (target ≥ 0.95). The last line is
the summary `make bench` shows.
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from bench.support import write_records
from gpt4batch.services.caller.settings import CallerSettings
from gpt4batch.services.mock_upstream.keys import key_id
from tests.support.mock_upstream import MockUpstream
from tests.support.nsq_servers import run_nsqd

TOKENS = {"a": "sk-bench-account-a", "b": "sk-bench-account-b"}
KEYS = {name: key_id(token) for name, token in TOKENS.items()}
SPAN = 5.0  # seconds the max call rate is judged over (a 1-s count is ±1 call of noise)
EDGE = 2.0  # seconds left out at each end of the steady part
TPM_WINDOW = 10.0  # seconds the token limit is counted over in phase 2

Samples = list[tuple[float, dict[str, int]]]


def sample(url: str, field: str, count: str, stop: threading.Event, out: Samples) -> None:
    """(time, {account: count}) from /stats[field] every 0.2 s until `stop`."""
    with httpx.Client(timeout=5) as http:
        while not stop.is_set():
            per_key = http.get(f"{url}/stats").json().get(field, {})
            now = time.monotonic()
            out.append((now, {n: per_key.get(k, {}).get(count, 0) for n, k in KEYS.items()}))
            stop.wait(0.2)


def max_rate(samples: Samples, name: str) -> float:
    best = 0.0
    for i, (t0, c0) in enumerate(samples):
        for t1, c1 in samples[i + 1 :]:
            if t1 - t0 >= SPAN:
                best = max(best, (c1[name] - c0[name]) / (t1 - t0))
                break
    return best


def steady_rate(samples: Samples) -> float:
    moving = [(t, sum(c.values())) for t, c in samples]
    first = next(t for t, total in moving if total > 0)
    last = next(t for t, total in reversed(moving) if total < moving[-1][1])
    window = [(t, total) for t, total in moving if first + EDGE <= t <= last - EDGE]
    if len(window) < 2:
        return 0.0
    return (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])


def run_phase(
    work: Path, records: int, mock_args: list[str], accounts: list[dict[str, Any]],
    flags: list[str], field: str, count: str,
) -> tuple[Samples, dict[str, Any]]:  # fmt: skip
    """One `run -n` over the accounts against a simulator: the samples and the final /stats
    (RuntimeError if the run fails)."""
    source = write_records(work / "in.jsonl", records)
    args = ["--token", TOKENS["a"], "--also-token", TOKENS["b"], *mock_args]
    with MockUpstream(*args) as mock:
        for account in accounts:
            account.update(token_env=f"BENCH_TOKEN_{account['name'].upper()}", base_url=mock.url)
        (work / "accounts.json").write_text(json.dumps({"accounts": accounts}))
        env = {**os.environ, **{f"BENCH_TOKEN_{n.upper()}": t for n, t in TOKENS.items()}}
        samples: Samples = []
        stop = threading.Event()
        with run_nsqd(work / "nsq", None) as nsqd:
            sampler = threading.Thread(target=sample, args=(mock.url, field, count, stop, samples))
            sampler.start()
            try:
                run = subprocess.run(
                    [sys.executable, "-m", "gpt4batch.cli", "run", "-i", str(source), "-o",
                     str(work / "out.jsonl"), "--progress", "off", "-e", "false", "-n",
                     "--nsqd-tcp-address", nsqd.tcp_address, "-g", "100",
                     "--accounts", str(work / "accounts.json"), *flags],
                    env=env, capture_output=True, text=True, timeout=600,
                )  # fmt: skip
            finally:
                stop.set()
                sampler.join()
        if run.returncode != 0:
            print(run.stderr[-2000:], file=sys.stderr)
            raise RuntimeError(f"run exited {run.returncode}")
        return samples, mock.stats()


def qps_phase(args: argparse.Namespace, work: Path) -> str:
    limits = {"a": args.qps_a, "b": args.qps_b}
    accounts = [{"name": n, "qps": q, "concurrency": 100} for n, q in limits.items()]
    mock = ["--fast", "--latency-ms", "100", "--jitter-ms", "100"]
    samples, stats = run_phase(work, args.records, mock, accounts, [], "key_calls", "calls")
    parts = []
    for name, q in limits.items():
        calls = stats["key_calls"][KEYS[name]]
        parts.append(
            f"{name} q {q:g}: max {max_rate(samples, name) / q:.3f}·q over {SPAN:g} s "
            f"({calls['calls']} calls)"
        )
    together = steady_rate(samples) / sum(limits.values())
    return "QPS: " + ", ".join(parts) + f", together {together:.3f} of the sum"


def tpm_phase(args: argparse.Namespace, work: Path) -> str:
    if "tpm" not in CallerSettings.model_fields:
        return "TPM: (this caller has no --tpm)"
    limits = {"a": args.tpm_a, "b": args.tpm_b}
    accounts = [
        {"name": n, "upstream": "openai", "qps": 0, "tpm": t, "concurrency": 100}
        for n, t in limits.items()
    ]
    window = f"{TPM_WINDOW:g}"
    mock = ["--latency-ms", "100", "--answer-tokens", "100", "--tpm-window", window]
    flags = ["--tpm-window", window, "--max-tokens", "110"]
    samples, stats = run_phase(
        work, args.tpm_records, mock, accounts, flags, "key_tokens", "total_tokens"
    )
    parts = []
    for name, tpm in limits.items():
        tokens = stats["key_tokens"][KEYS[name]]
        parts.append(
            f"{name} T {tpm:,}: max {tokens['max_tokens_in_window'] / tpm:.3f}·T in any "
            f"{window} s ({tokens['calls']} calls)"
        )
    together = steady_rate(samples) * TPM_WINDOW / sum(limits.values())
    return (
        "TPM: " + ", ".join(parts) + f", together {together:.3f} of the sum; "
        f"{stats['rate_limited']} 429s"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=900)
    p.add_argument("--qps-a", type=float, default=20)
    p.add_argument("--qps-b", type=float, default=10)
    p.add_argument("--tpm-records", type=int, default=300)
    p.add_argument("--tpm-a", type=int, default=6000)
    p.add_argument("--tpm-b", type=int, default=3000)
    args = p.parse_args()
    lines = []
    for name, phase in (("QPS", qps_phase), ("TPM", tpm_phase)):
        with tempfile.TemporaryDirectory(prefix="bench-accounts-") as tmp:
            try:
                lines.append(phase(args, Path(tmp)))
            except RuntimeError as exc:
                lines.append(f"{name}: ({exc})")
    print("; ".join(lines))


if __name__ == "__main__":
    main()
