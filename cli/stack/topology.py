"""The one description of the deployed topology, shared by `gpt4batch stack` and compose.

`gpt4batch stack up` starts these components as processes; `compose.yaml`
declares them as services. A test checks that compose has the same services,
runs the same programs, and sets the same key `GPT4BATCH_*` variables and
NSQ flags, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BOTH = frozenset({"compose", "stack"})
COMPOSE_ONLY = frozenset({"compose"})

# Variables every one of our services is configured by.
COMMON_ENV = (
    "GPT4BATCH_LOOKUPD_HTTP_ADDRESS",
    "GPT4BATCH_TOPIC_PREFIX",
    "GPT4BATCH_METRICS_PORT",
    "GPT4BATCH_LOG_FORMAT",
    "GPT4BATCH_MAX_MSG_SIZE",
    # The secret the services sign and verify results with (common/authenticator.py).
    "GPT4BATCH_BUS_SECRET_FILE",
)


@dataclass(frozen=True)
class Component:
    """One service of the topology.

    `program` is what runs: an NSQ binary, `gpt4batch` (with `args` the
    sub-command), `python` (with `args` = `-m module`), or a third-party server.
    `flags` are the options that matter for NSQ programs; `env` the
    `GPT4BATCH_*` variables that configure our own.
    """

    name: str
    program: str
    args: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    metrics: bool = False
    """Serves Prometheus metrics on GPT4BATCH_METRICS_PORT (scraped)."""
    scalable: bool = False
    """Runs as N replicas (`--scale caller=N`, `stack up --callers N`)."""
    where: frozenset[str] = field(default=BOTH)
    optional: str | None = None
    """Stack option that turns it on (`simulator`, `prometheus`); compose profile if any."""


NSQLOOKUPD = Component(
    "nsqlookupd", "nsqlookupd", flags=("--tcp-address", "--http-address", "--broadcast-address")
)
NSQD = Component(
    "nsqd",
    "nsqd",
    flags=(
        "--lookupd-tcp-address",
        "--broadcast-address",
        "--data-path",
        "--max-msg-size",
        "--max-msg-timeout",
        "--msg-timeout",
        "--mem-queue-size",
    ),
)
NSQADMIN = Component("nsqadmin", "nsqadmin", flags=("--lookupd-http-address", "--http-address"))
NSQ_EXPORTER = Component(
    "nsq-exporter",
    "python",
    args=("-m", "gpt4batch.common.nsq_exporter"),
    env=("GPT4BATCH_LOOKUPD_HTTP_ADDRESS", "GPT4BATCH_METRICS_PORT", "GPT4BATCH_LOG_FORMAT"),
    metrics=True,
)
SINK = Component(
    "sink", "gpt4batch", ("sink",), env=(*COMMON_ENV, "GPT4BATCH_OUT_DIR"), metrics=True
)
DOWNLOADER = Component(
    "downloader",
    "gpt4batch",
    ("downloader",),
    env=(*COMMON_ENV, "GPT4BATCH_DOWNLOAD_DIR"),
    metrics=True,
)
CALLER = Component(
    "caller",
    "gpt4batch",
    ("caller",),
    env=(*COMMON_ENV, "GPT4BATCH_UPSTREAM", "GPT4BATCH_BASE_URL", "GPT4BATCH_ALLOWED_DIRS"),
    metrics=True,
    scalable=True,
)
GATEWAY = Component(
    "gateway",
    "gpt4batch",
    ("gateway",),
    env=(*COMMON_ENV, "GPT4BATCH_PORT", "GPT4BATCH_DATA_DIR", "GPT4BATCH_API_KEYS"),
    metrics=True,
)
INGEST = Component(
    "ingest",
    "python",
    args=("-m", "gpt4batch.services.ingest.inbox"),
    env=(*COMMON_ENV, "GPT4BATCH_INBOX", "GPT4BATCH_PROCESSED_DIR"),
    metrics=True,
)
SIMULATOR = Component(
    "mock-upstream",
    "gpt4batch",
    ("mock-upstream",),
    flags=("--host", "--port"),
    optional="simulator",
)
PROMETHEUS = Component(
    "prometheus",
    "prometheus",
    flags=("--config.file", "--storage.tsdb.path"),
    optional="prometheus",
)
GRAFANA = Component("grafana", "grafana", where=COMPOSE_ONLY)

# In start order: NSQ first, consumers from the end of the pipeline backwards
# (so each stage's consumer is up before work reaches it), ingest last.
TOPOLOGY: tuple[Component, ...] = (
    NSQLOOKUPD,
    NSQD,
    NSQADMIN,
    NSQ_EXPORTER,
    SIMULATOR,
    SINK,
    DOWNLOADER,
    CALLER,
    GATEWAY,
    INGEST,
    PROMETHEUS,
    GRAFANA,
)

NSQ_PROGRAMS = frozenset({"nsqlookupd", "nsqd", "nsqadmin"})


def components(where: str) -> tuple[Component, ...]:
    """The components deployed by `where` ("compose" or "stack")."""
    return tuple(c for c in TOPOLOGY if where in c.where)
