"""The simulator's settings and their command-line flags."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields

from gpt4batch.common.settings import CliParser

FAULT_KINDS = ("5xx", "hang", "drop", "bad-json", "truncate")


@dataclass
class Options:
    """Everything `make_app` needs; defaults give a fast, fault-free server."""

    host: str = "127.0.0.1"
    port: int = 8765
    token: str = "sk-mock"
    also_tokens: list[str] = field(default_factory=list)
    console_email: str = "mock@example.com"
    console_password: str = "mock-password"
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    lognormal_median_ms: float = 0.0
    lognormal_sigma: float = 0.0
    qps: float = 0.0
    tpm: int = 0
    tpm_window: float = 60.0
    answer_tokens: int = 0
    fault_5xx: float = 0.0
    fault_hang: float = 0.0
    fault_drop: float = 0.0
    fault_bad_json: float = 0.0
    fault_truncate: float = 0.0
    hang_seconds: float = 600.0
    hostile_names: bool = False
    seed: int | None = None
    fault_header: bool = True
    fast: bool = False
    log_format: str = "auto"

    def fault_rates(self) -> dict[str, float]:
        return {
            "5xx": self.fault_5xx,
            "hang": self.fault_hang,
            "drop": self.fault_drop,
            "bad-json": self.fault_bad_json,
            "truncate": self.fault_truncate,
        }


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(
        prog="gpt4batch mock-upstream",
        description="Simulator of gpt4api.plus, OpenAI-compatible APIs and chatgpt-service.",
    )
    a = p.add_argument
    a("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    a("--port", type=int, default=8765, help="listen port; 0 picks a free one (default 8765)")
    a("--token", default="sk-mock", help="the one accepted Bearer token (default sk-mock)")
    a(
        "--also-token",
        dest="also_tokens",
        action="append",
        default=[],
        metavar="TOKEN",
        help="one more accepted Bearer token (repeatable: several accounts), counted per key",
    )
    a("--console-email", default="mock@example.com", help="login of /console/access_token")
    a("--console-password", default="mock-password", help="password of /console/access_token")
    a("--latency-ms", type=float, default=0.0, help="fixed delay added to every API answer")
    a("--jitter-ms", type=float, default=0.0, help="plus a uniform random 0..jitter delay")
    a("--lognormal-median-ms", type=float, default=0.0, help="plus a log-normal delay (median)")
    a("--lognormal-sigma", type=float, default=0.0, help="sigma of the log-normal delay")
    a("--qps", type=float, default=0.0, help="calls accepted per second; more get 429 (0: off)")
    a(
        "--tpm",
        type=int,
        default=0,
        help="OpenAI endpoints: tokens (prompt + answer) accepted per key in any 60 s; more "
        "get 429 with OpenAI's x-ratelimit-*-tokens headers (0: off)",
    )
    a(
        "--tpm-window",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds --tpm counts tokens over (OpenAI: 60; shorter for quick tests)",
    )
    a(
        "--answer-tokens",
        type=int,
        default=0,
        help="OpenAI endpoints: pad each answer to about this many tokens (0: a short answer)",
    )
    for kind in FAULT_KINDS:
        a(
            f"--fault-{kind}",
            type=float,
            default=0.0,
            metavar="RATE",
            help=f"{kind} fault rate 0..1",
        )
    a("--hang-seconds", type=float, default=600.0, help="how long a `hang` fault stalls")
    a("--hostile-names", action="store_true", help="every download gets a hostile file name")
    a("--seed", type=int, default=None, help="random seed: same ids, delays and faults")
    a(
        "--no-fault-header",
        dest="fault_header",
        action="store_false",
        help="ignore the X-Mock-Fault request header",
    )
    a(
        "--fast",
        action="store_true",
        help="load-generator path for benchmarks: only the chat endpoints and /stats, "
        "no faults, far less CPU per call (services/mock_upstream/fast.py)",
    )
    a(
        "--log-format",
        choices=["auto", "text", "json"],
        default="auto",
        metavar="FORMAT",
        help="log lines as text or json; auto: text on a terminal, JSON lines otherwise",
    )
    return p


def parse(argv: list[str] | None) -> Options:
    ns = vars(build_parser().parse_args(argv))
    names = {f.name for f in fields(Options)}
    return Options(**{k.replace("-", "_"): v for k, v in ns.items() if k in names})
