"""Topic and channel names, in one place, under a configurable prefix."""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_PREFIX = "gpt4batch"

# nsqd's own rule; pynsq does not check names and a bad one costs a reconnect.
_NAME = re.compile(r"^[.a-zA-Z0-9_-]{1,64}(#ephemeral)?$")


class InvalidName(ValueError):
    """A topic or channel name nsqd would refuse."""


def check_name(name: str, what: str = "topic") -> str:
    """Return `name` if nsqd accepts it as a topic/channel name, else raise InvalidName."""
    if not _NAME.match(name):
        raise InvalidName(
            f"invalid NSQ {what} name {name!r}: use 1-64 of [.a-zA-Z0-9_-], "
            "optionally ending in #ephemeral"
        )
    return name


@dataclass(frozen=True)
class Topics:
    """Every topic gpt4batch uses, derived from one prefix."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        for name in self.all():
            check_name(name)

    def _t(self, suffix: str) -> str:
        return f"{self.prefix}.{suffix}"

    @property
    def asks(self) -> str:
        return self._t("asks")

    @property
    def results(self) -> str:
        return self._t("results")

    @property
    def result_parts(self) -> str:
        """Pieces of results too large for one message (see `ResultPart`)."""
        return self._t("results.parts")

    @property
    def downloads(self) -> str:
        return self._t("downloads")

    @property
    def downloaded(self) -> str:
        return self._t("downloaded")

    @property
    def batches(self) -> str:
        return self._t("batches")

    @property
    def ingested(self) -> str:
        """No messages: one empty channel per batch ingest published, the batch's trace on
        nsqd (kept in nsqd's metadata; gone when nsqd is new or wiped). See
        services/ingest/resume.py."""
        return self._t("ingested")

    @property
    def stopped(self) -> str:
        """`BatchStopped` notices from the gateway (a batch cancelled or expired). Ephemeral:
        each caller hears it on a channel of its own (`stopped_channel`), nothing is kept
        while no caller listens; the gateway re-announces a stop while the batch still has
        unanswered asks (services/gateway/stops.py)."""
        return self._t("stopped#ephemeral")

    @property
    def dead(self) -> str:
        """Poison messages: bodies that failed to decode or validate, with the reason."""
        return self._t("dead")

    def authenticated(self) -> list[str]:
        """Topics only our services publish to: each message carries an authenticator
        (common/authenticator.py) and consumers refuse what does not verify. Asks and
        batch manifests stay open: they are how other systems hand work in."""
        return [
            self.results,
            self.result_parts,
            self.downloads,
            self.downloaded,
            self.stopped,
            self.dead,
        ]

    def all(self) -> list[str]:
        return [
            self.asks,
            self.results,
            self.result_parts,
            self.downloads,
            self.downloaded,
            self.batches,
            self.stopped,
            self.dead,
        ]


class Channels:
    """The channel each service consumes its topic on."""

    CALLER = "caller"
    DOWNLOADER = "downloader"
    SINK = "sink"
    SINK_DOWNLOADS = "sink"
    GATEWAY = "gateway"  # the Batch API gateway's own results/downloaded channel
    DEAD_KEEP = "keep"  # dead letters kept for `gpt4batch dead list/replay` (never FINed)

    @staticmethod
    def stopped(instance: str) -> str:
        """A caller's own ephemeral channel on the stopped topic: every caller hears every
        stop (a shared channel would give each notice to one caller only)."""
        return check_name(f"caller.{instance}"[:64] + "#ephemeral", "channel")


def standard_channels(topics: Topics) -> dict[str, list[str]]:
    """Each topic and the channels of the services that consume it.

    Every NSQ client creates these on each nsqd at start, before it publishes
    or subscribes: nsqd copies a message only to channels that exist when it
    is published, so a channel created later (at a consumer's first nsqlookupd
    poll, after e.g. an `nsq_tail` channel appeared) would miss messages.
    """
    return {
        topics.asks: [Channels.CALLER],
        topics.results: [Channels.SINK],
        topics.downloads: [Channels.DOWNLOADER],
        topics.downloaded: [Channels.SINK_DOWNLOADS],
        topics.batches: [Channels.SINK],
        topics.dead: [Channels.SINK, Channels.DEAD_KEEP],
    }
