"""`gpt4batch run` options: every flag of the original `batchsvc`, same names and defaults.

The original was a Go (cobra) program, so users write `-f=true`, `-s=false`,
`--upload_url` and `--enable-download`; all of these are accepted.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from gpt4batch.common.settings import CliParser, add_flags, parse_bool
from gpt4batch.common.topics import DEFAULT_PREFIX
from gpt4batch.services.caller.settings import CallerSettings

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


def _bool_flag(
    parser: argparse._ActionsContainer,
    *names: str,
    default: bool,
    help: str,
    dest: str | None = None,
) -> None:
    extra = {"dest": dest} if dest else {}
    parser.add_argument(
        *names,
        **extra,
        nargs="?",
        const=True,
        default=default,
        type=parse_bool,
        metavar="BOOL",
        help=f"{help} (default {str(default).lower()}; give false to turn off)",
    )


def _default(field: str) -> Any:
    """The caller settings' default: written once, in the settings."""
    return CallerSettings.model_fields[field].get_default(call_default_factory=True)


#: The original's spellings of caller settings (flags -> settings field). Each such
#: flag is generated from the field (type, default, help); `--<field-name>` is an alias.
ORIGINAL_ALIASES = {
    "-g/--goroutine": "concurrency",
    "-q/--qps": "qps",
    "-m/--model": "model",
    "-z/--gizmo-id": "gizmo_id",
    "-s/--history-and-training-disabled": "history_and_training_disabled",
    "-u/--url": "chat_url",
    "-l/--upload-url": "upload_url",
    "-e/--enable-download": "enable_download",
    "-p/--download-prefix": "download_prefix",
}

#: Where `run`'s default differs from the service's, and why.
_RUN_DEFAULT_NOTES = {"model": "gpt-4-gizmo on gpt4api"}

#: Settings `run` decides itself (the embedded services' plumbing).
_NOT_FOR_RUN = frozenset(
    {"allowed_dirs", "feed_dir", "metrics_port", "metrics_host", "log_format", "log_level"}
)


def _value_type(name: str) -> type:
    """int / float / str / bool of a caller setting (Optional unwrapped)."""
    annotation = CallerSettings.model_fields[name].annotation
    for kind in (bool, int, float):
        if annotation is kind or kind in getattr(annotation, "__args__", ()):
            return kind
    return str


def _add_original_flags(parser: argparse.ArgumentParser) -> None:
    """The original's flags, generated from the caller settings they stand for."""
    for spelling, name in ORIGINAL_ALIASES.items():
        names = spelling.split("/")
        canonical = "--" + name.replace("_", "-")
        if canonical not in names:
            names.append(canonical)
        info = CallerSettings.model_fields[name]
        help_text = (info.description or name).rstrip(".")
        default = _default(name)
        kind = _value_type(name)
        if kind is bool:
            _bool_flag(parser, *names, dest=name, default=bool(default), help=help_text)
            continue
        if name in _RUN_DEFAULT_NOTES:
            help_text += f" (default {_RUN_DEFAULT_NOTES[name]})"
        parser.add_argument(*names, dest=name, type=kind, default=default, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(
        prog="gpt4batch run",
        description="Run a JSONL batch of conversations through the upstream, in one command. "
        "Alias: batchsvc. The output has one line per input line, in input order.",
    )
    a = p.add_argument
    a("-i", "--in", "--input", dest="input", default="example.jsonl", help="input JSONL file")
    a("-o", "--out", "--output", dest="out", default="out.jsonl", help="output JSONL file")
    _add_original_flags(p)
    _bool_flag(
        p,
        "-f",
        "--fix",
        default=False,
        help="resume: the input is a previous output; only failed records run",
    )
    a("-d", "--download-dir", default=None, help="download folder (default: the input's folder)")
    a(
        "--allow-download-host",
        action="append",
        default=[],
        metavar="HOST[:PORT]|CIDR",
        help="a non-public host or range downloads may come from, repeatable (the configured "
        "upstream's own host:port is allowed already) [GPT4BATCH_ALLOW_DOWNLOAD_HOST]",
    )
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
        default=_default("upstream"),
        help="upstream kind",
    )
    g.add_argument("--base-url", default=None, help="upstream base URL")
    g.add_argument("--tier", choices=["standard", "concurrent"], default=_default("tier"))
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
    g.add_argument(
        "--retries", type=int, default=_default("retries"), help="retries of transient failures"
    )
    g.add_argument(
        "--read-timeout", type=float, default=_default("read_timeout"), help="chat read timeout, s"
    )

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
    n.add_argument("--feed-topic", default=_default("feed_topic"), help="topic of the feed")

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
    # Every other caller setting, generated: a new caller option reaches `run` by itself.
    taken = {action.dest for action in p._actions} | set(ORIGINAL_ALIASES.values())
    add_flags(p, CallerSettings, skip=frozenset(taken | _NOT_FOR_RUN))
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
    chat_url: str | None
    upload_url: str | None
    enable_download: bool
    download_dir: str | None
    allow_download_host: list[str]
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
    extra: dict[str, Any] = field(default_factory=dict)
    """Generated caller settings given on the command line."""


def parse(argv: Sequence[str]) -> RunOptions:
    parser = build_parser()
    args = parser.parse_args(normalize_argv(argv))
    if args.concurrency < 1:
        parser.error("-g/--goroutine must be at least 1")
    if args.qps < 0:
        parser.error("-q/--qps must be >= 0")
    if args.enable_nsq and not (args.nsqd_tcp_address or args.lookupd_http_address):
        parser.error("-n/--enable_nsq needs --nsqd-tcp-address or --lookupd-http-address")
    values = vars(args)
    own = {f.name for f in fields(RunOptions)}
    extra = {k: values.pop(k) for k in list(values) if k not in own}
    return RunOptions(**values, extra={k: v for k, v in extra.items() if v is not None})
