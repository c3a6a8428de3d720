"""Moved to `gpt4batch.common.nsq.admin`; this name stays only for code written before the
move (import from `common.nsq.admin`)."""

from gpt4batch.common.nsq.admin import NsqdAdmin, NsqdNode, find_nodes, http_url, node_addresses

__all__ = ["NsqdAdmin", "NsqdNode", "find_nodes", "http_url", "node_addresses"]
