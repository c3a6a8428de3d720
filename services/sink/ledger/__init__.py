"""The batch ledger: one batch's durable, seq-keyed state, owned by the sink.

Every fact about a batch lives here and nowhere else: which records (by
`seq`, the 0-based position in the input) have a result, which of those
failed, which files their answers planned to download and which of those
have a result, and how many records the batch holds (its manifest). A batch
is complete when every seq below the total has an entry and every planned
download has a result (fetched or failed with a reason) — decided by
counts, never by time or silence.

Files of a batch whose output is `<stem>.jsonl` (all beside it):

    <stem>.journal.jsonl    header {"ledger":2,"batch":…,"started":<unix time of the first
                            message>}, then one entry per result:
                            {"seq":12,"ok":true,"files":["…png"],"usage":{…},"record":{…}}
                            (`usage`: what its calls cost, when a caller made any)
    <stem>.rejects.jsonl    one `Reject` row per refused input line
    <stem>.downloads.jsonl  one `DownloadResult` row per planned file (fetched or failed)
    <stem>.manifest.json    the batch's `BatchManifest` (total, input, its sha256 and location)
    <stem>.done             written only once the batch is complete
    <stem>.jsonl            the output, written in input order at completion

Reading a batch's state (the gateway, `gpt4batch reconcile`, tests) — no
writes, safe while a sink appends:

    from gpt4batch.services.sink.ledger import read_ledger
    state = read_ledger(Path("out/batch-1.jsonl"))     # the batch's output path
    state.counts        # LedgerCounts: total, done, ok, failed, downloads_*…
    state.usage         # UsageTotals: tokens and cost of the batch's calls
    state.status        # "open" | "ready" (complete, output not yet written) | "complete"
    state.is_done(7), state.is_failed(7)
    list(state.missing_seqs()), state.pending_downloads()  # what is still owed

The sink (`services/sink/sink.py`) and `gpt4batch run` (its embedded sink)
write through the same class; `BatchLedger.load()` (which also repairs a torn
last line) must be used by the one writer only.

Modules: `journal` (the line format), `counting` (the pure state machine),
`read` (rebuilding it from the files), `store` (the concurrent writer),
`dead_letter` (the dead-letter → failed rule), `files` (paths, the one atomic write),
`output` (the one sort of the journal by seq, in bounded memory, and `write_output`).
"""

from gpt4batch.services.sink.ledger.counting import LedgerCounts, LedgerTally, Status
from gpt4batch.services.sink.ledger.dead_letter import DEAD_LETTERED
from gpt4batch.services.sink.ledger.files import (
    LedgerPaths,
    atomic_output,
    journal_batch,
    write_atomically,
)
from gpt4batch.services.sink.ledger.journal import (
    LEDGER_VERSION,
    Entry,
    entry_line,
    parse_entry,
    usage_entry,
)
from gpt4batch.services.sink.ledger.store import BatchLedger, read_ledger

__all__ = [
    "DEAD_LETTERED",
    "LEDGER_VERSION",
    "BatchLedger",
    "Entry",
    "LedgerCounts",
    "LedgerPaths",
    "LedgerTally",
    "Status",
    "atomic_output",
    "entry_line",
    "journal_batch",
    "parse_entry",
    "read_ledger",
    "usage_entry",
    "write_atomically",
]
