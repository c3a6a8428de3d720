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
from gpt4batch.common.upstreams.config import DEFAULT_GPT4API_BASE
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
    extra: dict[str, Any] = {"dest": dest} if dest else {}
    parser.add_argument(
        *names,
        **extra,
        nargs="?",
        const=True,
        default=default,
        type=parse_bool,
        metavar="BOOL",
        help=help,  # the formatter states the default (cli_help.bool_default)
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
_RUN_MODEL_NOTE = "gpt-4-gizmo on gpt4api"
_RUN_DEFAULT_NOTES = {
    # In this process no message can time out, so no deadline (caller_settings).
    "conversation_deadline": "none in this process; 840 with -n",
}

_METAVARS = {
    "concurrency": "N",
    "qps": "QPS",
    "model": "MODEL",
    "gizmo_id": "ID",
    "chat_url": "URL",
    "upload_url": "URL",
    "download_prefix": "PREFIX",
}

USAGE = "gpt4batch run [-i INPUT] [-o OUT] [-g N] [-q QPS] [-m MODEL] [-f] [options]"

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
        if name == "model":
            help_text += f" ({_RUN_MODEL_NOTE})"
        parser.add_argument(
            *names, dest=name, type=kind, default=default, help=help_text, metavar=_METAVARS[name]
        )


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(
        prog="gpt4batch run",
        usage=USAGE,
        description="Run a JSONL batch of conversations (docs/input-format.md) through the "
        "upstream. Alias: batchsvc. One output line per input line, in input order.",
    )
    p._optionals.title = "options of the original batchsvc (same names and defaults)"
    a = p.add_argument
    a(
        "-i",
        "--in",
        "--input",
        dest="input",
        default="example.jsonl",
        metavar="FILE",
        help="input JSONL file",
    )
    a(
        "-o",
        "--out",
        "--output",
        dest="out",
        default="out.jsonl",
        metavar="FILE",
        help="output JSONL file",
    )
    _add_original_flags(p)
    _bool_flag(
        p,
        "-f",
        "--fix",
        default=False,
        help="resume: the input is a previous output; only failed records run",
    )
    a(
        "-d",
        "--download-dir",
        default=None,
        metavar="DIR",
        help="download folder (default: the input's folder)",
    )
    _bool_flag(
        p,
        "-r",
        "--rdb",
        default=True,
        help="ignored: every result is fsynced as it arrives",
    )
    a(
        "-v",
        "--rdb-interval",
        type=int,
        metavar="MIN",
        default=60,
        help="ignored (kept for compatibility)",
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
        metavar="KIND",
        help="gpt4api, openai (any OpenAI-compatible API) or chatgpt-service",
    )
    g.add_argument(
        "--base-url",
        default=None,
        metavar="URL",
        help=f"upstream base URL (unset: {DEFAULT_GPT4API_BASE} for gpt4api, unless -u/-l "
        "give full URLs; openai and chatgpt-service need it)",
    )
    g.add_argument(
        "--tier",
        choices=["standard", "concurrent"],
        default=_default("tier"),
        metavar="TIER",
        help="gpt4api plan: standard or concurrent",
    )
    g.add_argument(
        "--access-token",
        default=None,
        metavar="TOKEN",
        help="upstream token, prefer --access-token-file (unset: GPT4BATCH_ACCESS_TOKEN, "
        "else the credentials file)",
    )
    g.add_argument(
        "--credentials",
        type=Path,
        metavar="FILE",
        default=None,
        help="credentials file from `gpt4batch auth` (default ~/.gpt4api-sk.pub)",
    )
    g.add_argument(
        "--retries",
        type=int,
        metavar="N",
        default=_default("retries"),
        help="retries of transient failures",
    )
    g.add_argument(
        "--read-timeout",
        type=float,
        metavar="S",
        default=_default("read_timeout"),
        help="chat read timeout, s",
    )

    n = p.add_argument_group("NSQ (-n)")
    n.add_argument(
        "--nsqd-tcp-address",
        action="append",
        metavar="HOST:PORT",
        default=[],
        help="nsqd host:port to publish to, repeatable (unset: from nsqlookupd; -n needs "
        "this or --lookupd-http-address)",
    )
    n.add_argument(
        "--lookupd-http-address",
        action="append",
        metavar="HOST:PORT",
        default=[],
        help="nsqlookupd host:port, repeatable (unset: read only the --nsqd-tcp-address ones)",
    )
    nx = p.add_argument_group("NSQ details (-n)", advanced=True)
    nx.add_argument(
        "--nsqd-http-address",
        action="append",
        metavar="HOST:PORT",
        default=[],
        help="nsqd's HTTP host:port, repeatable, one per --nsqd-tcp-address in the same order "
        "(unset: as nsqlookupd lists it, else TCP port + 1)",
    )
    nx.add_argument("--topic-prefix", default=DEFAULT_PREFIX, help="prefix of every topic name")
    _bool_flag(
        nx,
        "--feed",
        default=True,
        help="publish every answered ask as {ask, answer, dir} to --feed-topic, like the "
        "original -n",
    )
    nx.add_argument("--feed-topic", default=_default("feed_topic"), help="topic of the feed")
    nx.add_argument(
        "--bus-secret-file",
        default=None,
        metavar="FILE",
        help="the secret results and download jobs are signed with, shared with services on "
        "the same nsqd (e.g. a separate downloader); default: GPT4BATCH_BUS_SECRET, else a "
        "random one of this run [GPT4BATCH_BUS_SECRET_FILE]",
    )

    r = p.add_argument_group("run")
    r.add_argument(
        "--allowed-dirs",
        action="append",
        default=[],
        metavar="DIR",
        help="another folder asks may upload images/files from (repeatable; the input's "
        "folder is always allowed)",
    )
    r.add_argument(
        "--batch", default=None, metavar="ID", help="batch id (default: derived from the input)"
    )
    r.add_argument(
        "--grace",
        type=float,
        metavar="S",
        default=30.0,
        help="seconds in-flight calls may take to finish after Ctrl-C",
    )
    r.add_argument(
        "--progress",
        choices=["auto", "bar", "log", "off"],
        default="auto",
        metavar="MODE",
        help="bar, log (a line per record) or off; auto: a bar on a terminal, else log",
    )
    r.add_argument(
        "--log-format",
        choices=["auto", "text", "json"],
        default="auto",
        metavar="FORMAT",
        help="log lines as text or json; auto: text on a terminal, JSON lines otherwise",
    )
    r.add_argument(
        "--budget-usd",
        type=float,
        default=None,
        metavar="USD",
        help="spend cap (docs/limits.md)",
    )
    tx = p.add_argument_group("tokens and cost", advanced=True)
    _bool_flag(
        tx,
        "--estimate",
        default=False,
        help="make no call: say the tokens and cost the batch would take at the prices "
        "(--input-usd-per-1m, --output-usd-per-1m, --usd-per-call) and how long it needs at "
        "the limits (-q, --tpm)",
    )
    dx = p.add_argument_group("downloads", advanced=True)
    dx.add_argument(
        "--allow-download-host",
        action="append",
        default=[],
        metavar="HOST[:PORT]|CIDR",
        help="a non-public host or range downloads may come from, repeatable (the configured "
        "upstream's own host:port is allowed already; also GPT4BATCH_ALLOW_DOWNLOAD_HOST)",
    )
    # Every other caller setting, generated: a new caller option reaches `run` by itself.
    taken = {action.dest for action in p._actions} | set(ORIGINAL_ALIASES.values())
    add_flags(
        p,
        CallerSettings,
        skip=frozenset(taken | _NOT_FOR_RUN),
        title="caller and bus tuning",
        advanced=True,
        default_notes=_RUN_DEFAULT_NOTES,
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
    chat_url: str | None
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
    nsqd_http_address: list[str]
    lookupd_http_address: list[str]
    topic_prefix: str
    feed: bool
    feed_topic: str
    batch: str | None
    grace: float
    progress: str
    log_format: str = "auto"
    budget_usd: float | None = None
    estimate: bool = False
    allowed_dirs: list[str] = field(default_factory=list)
    allow_download_host: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    """Generated caller settings given on the command line."""


def parse(argv: Sequence[str]) -> RunOptions:
    parser = build_parser()
    args = parser.parse_args(normalize_argv(argv))
    if args.concurrency < 1:
        parser.error("-g/--goroutine must be at least 1")
    if args.qps < 0:
        parser.error("-q/--qps must be >= 0")
    if (args.tpm or 0) < 0:  # a generated flag: None when not given
        parser.error("--tpm must be >= 0")
    if args.budget_usd is not None and args.budget_usd <= 0:
        parser.error("--budget-usd must be more than 0")
    if args.enable_nsq and not (args.nsqd_tcp_address or args.lookupd_http_address):
        parser.error(
            "-n/--enable-nsq needs --nsqd-tcp-address or --lookupd-http-address; no nsqd yet? "
            "`gpt4batch stack up` starts one on this machine (docs/deployment.md)"
        )
    values = vars(args)
    own = {f.name for f in fields(RunOptions)}
    extra = {k: values.pop(k) for k in list(values) if k not in own}
    return RunOptions(**values, extra={k: v for k, v in extra.items() if v is not None})
