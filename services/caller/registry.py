"""A caller tells the gateway what it serves: its registration on nsqd (common/nsq/callers)."""

from __future__ import annotations

from collections.abc import Iterable

from gpt4batch.common.endpoints import served_by
from gpt4batch.common.nsq.callers import CallerInfo, CallerRegistry
from gpt4batch.services.caller.limits.membership import new_member_id
from gpt4batch.services.caller.settings import CallerSettings


def served_endpoints(kinds: Iterable[str]) -> tuple[str, ...]:
    """The endpoints every one of `kinds` serves (a caller with several accounts runs an
    ask on any of them)."""
    kinds = list(kinds)
    first = served_by(kinds[0]) if kinds else ()
    return tuple(e for e in first if all(e in served_by(k) for k in kinds[1:]))


def caller_info(settings: CallerSettings, kinds: Iterable[str]) -> CallerInfo:
    kinds = sorted(set(kinds))
    group = settings.limit_group or settings.topic_prefix
    return CallerInfo(
        id=new_member_id(),
        kind="+".join(kinds),
        concurrency=settings.concurrency,
        endpoints=served_endpoints(kinds),
        limit="process" if settings.limit_scope == "process" else f"fleet:{group}",
    )


def caller_registry(settings: CallerSettings, kinds: Iterable[str]) -> CallerRegistry | None:
    """The caller's registration on every nsqd (None without NSQ, e.g. inside `run`)."""
    if not (settings.nsqd_tcp_address or settings.lookupd_http_address):
        return None
    secret = settings.nsq_auth_secret
    return CallerRegistry(
        caller_info(settings, kinds),
        settings.topic_prefix,
        nsqd_tcp=settings.nsqd_tcp_address,
        nsqd_http=settings.nsqd_http_address,
        lookupd_http=settings.lookupd_http_address,
        auth_secret=secret.get_secret_value() if secret else None,
    )
