"""Whether ingest's published index (checkpoint.py) still describes the cluster it publishes to.

The index says which seqs of a (batch, input) nsqd already acknowledged. It lives
on ingest's disk, the asks in nsqd: a new or wiped nsqd holds none of them, and
skipping them then publishes nothing for a batch that can never finish. So ingest
leaves a trace of each batch on every nsqd before it publishes a record: an empty
channel on the `<prefix>.ingested` topic, named after the batch (no messages;
nsqd keeps it in its metadata across restarts, a wiped or new nsqd has none). The
index's first line records the nsqd and the trace.

On a re-run: no trace of the batch on any nsqd means the index belongs to another
cluster (or to this one before it was wiped): ingest says so in one line, starts
the index afresh and publishes every record. An index written before the trace
existed cannot be checked: exit 2, naming `--resume false`.
"""

from __future__ import annotations

import asyncio
import hashlib
import re

from gpt4batch.common.bus import Bus
from gpt4batch.common.errors import ConfigError
from gpt4batch.common.logging import get_logger
from gpt4batch.services.ingest.checkpoint import PublishedSeqs

log = get_logger("gpt4batch.ingest")

_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]")


def trace_channel(batch: str) -> str:
    """The batch's channel name on the `ingested` topic (nsqd's rule: 64 of [.a-zA-Z0-9_-])."""
    digest = hashlib.sha1(batch.encode()).hexdigest()[:12]
    return f"{_UNSAFE.sub('_', batch)[:40]}-{digest}"


async def open_index(bus: Bus, index: PublishedSeqs, batch: str, *, resume: bool = True) -> int:
    """Leave the batch's trace on every nsqd and load `index` if the cluster still has the
    batch (else start it afresh); returns how many seqs it holds (those are skipped).

    `resume` False starts the index afresh whatever it held. Raises ConfigError for an
    index that cannot be checked (written before the trace existed). When nsqd's HTTP
    API does not answer (a wrong --nsqd-http-address), nothing can be checked: the
    index is trusted, as before the trace existed, and ingest says so.
    """
    topic, channel = bus.topics.ingested, trace_channel(batch)
    held = await asyncio.to_thread(index.load) if resume else 0
    nodes = await bus.nodes_with_channel(topic, channel)
    if held and not _still_applies(index, nodes, batch):
        held = 0
    traced = await bus.create_channel(topic, channel)
    if not held:
        record: dict[str, object] = {"trace": f"{topic}/{channel}", "traced": traced}
        if nodes:
            record["nsqd"] = sorted(nodes)
        await asyncio.to_thread(index.begin, record)
    return held


def _still_applies(index: PublishedSeqs, nodes: dict[str, bool] | None, batch: str) -> bool:
    """Whether a loaded index describes the cluster whose nsqd have (True) or lack (False)
    the batch's trace; `nodes` None: nsqd could not be asked."""
    if nodes is None:
        log.warning(
            "cannot check that nsqd still has this batch (its HTTP API does not answer; "
            "--nsqd-http-address): resuming from the index",
            batch=batch,
            index=str(index.path),
        )
        return True
    if index.cluster is None and not any(nodes.values()):
        raise ConfigError(
            f"nsqd has no trace of batch {batch!r} and the index of its earlier run "
            f"({index.path}) does not say which nsqd it belongs to: re-run with "
            "--resume false to publish every record"
        )
    if index.cluster is None or not index.cluster.get("traced", True):
        return True  # no trace was left then (nsqd's HTTP API did not answer): trust it
    if not any(nodes.values()):
        log.warning(
            "nsqd has no trace of this batch (a new or wiped nsqd): the index of an "
            "earlier run does not apply, every record is published",
            batch=batch,
            nsqd=sorted(nodes),
            index_nsqd=index.cluster.get("nsqd"),
        )
        return False
    wiped = [n for n in index.cluster.get("nsqd") or [] if nodes.get(n) is False]
    if wiped:
        log.warning(
            "nsqd that held asks of this batch has no trace of it now (wiped?): what it "
            "held is lost; `gpt4batch reconcile` republishes what the output lacks",
            batch=batch,
            nsqd=wiped,
        )
    return True
