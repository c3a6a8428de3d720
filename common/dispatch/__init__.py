"""Deciding each message's fate: `Dispatcher` (one handler call per message) and
`BatchDispatcher` (group commit), one family; dead letters are built in `dead_letters`."""

from __future__ import annotations

from typing import Any

from gpt4batch.common.bus import Bus, Subscription
from gpt4batch.common.dispatch.batches import BatchDispatcher
from gpt4batch.common.dispatch.dispatcher import Dispatcher

__all__ = ["BatchDispatcher", "Dispatcher", "dispatcher_for"]


def dispatcher_for(bus: Bus, sub: Subscription[Any]) -> Dispatcher:
    """The dispatcher of `sub` on `bus` (a transport makes one per subscription)."""
    return Dispatcher(bus, sub) if sub.batch_handler is None else BatchDispatcher(bus, sub)
