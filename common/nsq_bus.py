"""Moved to `gpt4batch.common.nsq.bus`; this name stays only for code written before the
move (import from `common.nsq.bus`)."""

from gpt4batch.common.nsq.bus import NsqBus

__all__ = ["NsqBus"]
