"""`gpt4batch run` options: every flag of the original `batchsvc`, same names and defaults.

The original was a Go (cobra) program, so users write `-f=true`, `-s=false`,
`--upload_url` and `--enable-download`; all of these are accepted.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gpt4batch.common.settings import CliParser, parse_bool
from gpt4batch.common.topics import DEFAULT_PREFIX

_SHORT_WITH_VALUE = re.compile(r"^(-[a-zA-Z])=(.*)$", re.DOTALL)


def normalize_argv(argv: Sequence[str]) -> list[str]:
    """cobra spellings → argparse: `-f=true` → `-f true`, `--upload_url` → `--upload-url`."""
    out: list[str] = []
    for arg in argv:
        match = _SHORT_WITH_VALUE.match(arg)
        if match:
            out += [match.group(1), match.group(2)]
        elif arg.startswith("--") and "_" in arg.split("=", 1)[0]:
            name, eq, value = arg.partition("=")
            out.append(name.replace("_", "-") + eq + value)
        else:
            out.append(arg)
    return out


def _bool_flag(parser: argparse._ActionsContainer, *names: str, default: bool, help: str) -> None:
    parser.add_argument(
        *names,
        nargs="?",
        const=True,
        default=default,
        type=parse_bool,
        metavar="BOOL",
        help=f"{help} (default {str(default).lower()}; give false to turn off)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(
        prog="gpt4batch run",
        description="Run a JSONL batch of conversations through the upstream, in one command. "
        "Alias: batchsvc. The output has one line per input line, in input order.",
    )
    a = p.add_argument
    a("-i", "--in", dest="input", default="example.jsonl", help="input JSONL file")
    a("-o", "--out", default="out.jsonl", help="output JSONL file (default out.jsonl)")
    a(
        "-g",
        "--goroutine",
        "--concurrency",
        dest="concurrency",
        type=int,
        default=60,
        help="conversations in flight at once (default 60)",
    )
    a(
        "-q",
        "--qps",
        type=float,
        default=1.0,
        help="upstream calls per second, all calls and retries; 0 = no limit (default 1)",
    )
    a("-m", "--model", default=None, help="model (default gpt-4-gizmo on gpt4api)")
    a("-z", "--gizmo-id", default=None, help="GPTs gizmo id: chats go to /gizmos")
    _bool_flag(
        p,
        "-f",
        "--fix",
        default=False,
        help="resume: the input is a previous output; only failed records run",
    )
    _bool_flag(
        p,
        "-s",
        "--history-and-training-disabled",
        default=True,
        help="ask the upstream not to keep the conversations",
    )
    a("-u", "--url", default=None, help="full chat URL (default: base URL + tier + all-tools)")
    a("-l", "--upload-url", default=None, help="full upload URL (default: base URL + tier)")
    _bool_flag(p, "-e", "--enable-download", default=True, help="download produced files")
    a("-d", "--download-dir", default=None, help="download folder (default: the input's folder)")
    a("-p", "--download-prefix", default="GPT4API", help="prefix of downloaded file names")
    _bool_flag(
        p,
        "-r",
        "--rdb",
        default=True,
        help="kept for compatibility: results are always journaled durably",
    )
    a(
        "-v",
        "--rdb-interval",
        type=int,
        default=60,
        help="kept for compatibility; ignored (every result is fsynced as it arrives)",
    )
    _bool_flag(
        p,
        "-n",
        "--enable-nsq",
        default=False,
        help="go through NSQ (shares the work with caller replicas elsewhere)",
    )

    g = p.add_argument_group("upstream")
    g.add_argument(
        "--upstream",
        choices=["gpt4api", "openai", "chatgpt-service"],
        default="gpt4api",
        help="upstream kind (default gpt4api)",
    )
    g.add_argument("--base-url", default=None, help="upstream base URL")
    g.add_argument("--tier", choices=["standard", "concurrent"], default="standard")
    g.add_argument(
        "--access-token",
        default=None,
        help="token (else GPT4BATCH_ACCESS_TOKEN, else the credentials file)",
    )
    g.add_argument(
        "--credentials",
        type=Path,
        default=None,
        help="credentials file from `gpt4batch auth` (default ~/.gpt4api-sk.pub)",
    )
    g.add_argument("--retries", type=int, default=5, help="retries of transient failures")
    g.add_argument("--read-timeout", type=float, default=480.0, help="chat read timeout, s")

    n = p.add_argument_group("NSQ (-n)")
    n.add_argument("--nsqd-tcp-address", action="append", default=[], help="repeatable")
    n.add_argument("--lookupd-http-address", action="append", default=[], help="repeatable")
    n.add_argument("--topic-prefix", default=DEFAULT_PREFIX)
    _bool_flag(
        n,
        "--feed",
        default=True,
        help="publish every answered ask as {ask, answer, dir} to --feed-topic, like the "
        "original -n",
    )
    n.add_argument("--feed-topic", default="gpt4api", help="topic of the feed")

    r = p.add_argument_group("run")
    r.add_argument("--batch", default=None, help="batch id (default: derived from the input)")
    r.add_argument(
        "--grace",
        type=float,
        default=30.0,
        help="seconds in-flight calls may take to finish after Ctrl-C",
    )
    r.add_argument(
        "--progress",
        choices=["auto", "bar", "log", "off"],
        default="auto",
        help="progress bar on a TTY, one log line per record otherwise",
    )
    return p


@dataclass(frozen=True)
class RunOptions:
    input: str
    out: str
    concurrency: int
    qps: float
    model: str | None
    gizmo_id: str | None
    fix: bool
    history_and_training_disabled: bool
    url: str | None
    upload_url: str | None
    enable_download: bool
    download_dir: str | None
    download_prefix: str
    rdb: bool
    rdb_interval: int
    enable_nsq: bool
    upstream: str
    base_url: str | None
    tier: str
    access_token: str | None
    credentials: Path | None
    retries: int
    read_timeout: float
    nsqd_tcp_address: list[str]
    lookupd_http_address: list[str]
    topic_prefix: str
    feed: bool
    feed_topic: str
    batch: str | None
    grace: float
    progress: str


def parse(argv: Sequence[str]) -> RunOptions:
    parser = build_parser()
    args = parser.parse_args(normalize_argv(argv))
    if args.concurrency < 1:
        parser.error("-g/--goroutine must be at least 1")
    if args.qps < 0:
        parser.error("-q/--qps must be >= 0")
    if args.enable_nsq and not (args.nsqd_tcp_address or args.lookupd_http_address):
        parser.error("-n/--enable_nsq needs --nsqd-tcp-address or --lookupd-http-address")
    return RunOptions(**vars(args))
