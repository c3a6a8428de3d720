"""Moved to `gpt4batch.common.seqset` (issue 20: no ingest <-> sink package cycle); this
name stays only until services/sink/ledger.py imports it from there (a landing of that
file waits for /work/main's stale index)."""

from gpt4batch.common.seqset import SeqSet

__all__ = ["SeqSet"]
