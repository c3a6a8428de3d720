"""The batch ledger sums what its results' calls cost (issue 21): the journal keeps each
result's `usage`, so a sink restarted (or `run` continued after a crash) has the same
totals; a duplicate adds nothing, a success replacing a failure adds its own calls (both
were paid), and a record passed through with no call (`usage` None) adds nothing."""

from __future__ import annotations

from pathlib import Path

from gpt4batch.common.messages import ResultMessage, UsageLine
from gpt4batch.services.sink.index import iter_lines
from gpt4batch.services.sink.ledger import BatchLedger, parse_entry, read_ledger
from tests.sink.helpers import result, run


def paid(msg: ResultMessage, prompt: int, completion: int, cost: float) -> ResultMessage:
    usage = UsageLine(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        estimated=prompt == 7,
        cost_usd=cost,
    )
    return msg.model_copy(update={"usage": usage})


def test_totals_survive_a_reload_and_count_each_paid_result_once(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"

    async def scenario() -> None:
        ledger = BatchLedger(out, "b1").load()
        await ledger.add_result(paid(result("r0", seq=0), 100, 20, 0.5))
        await ledger.add_result(paid(result("r0", seq=0), 100, 20, 0.5))  # a duplicate
        await ledger.add_result(paid(result("r1", seq=1, failed=True), 7, 3, 0.25))
        await ledger.add_result(paid(result("r1", seq=1), 50, 10, 0.125))  # replaces it
        await ledger.add_result(result("r2", seq=2))  # passed through: no call made
        u = ledger.usage
        assert (u.prompt_tokens, u.completion_tokens, u.records) == (157, 33, 3)
        assert u.cost_usd == 0.875 and u.estimated_records == 1
        await ledger.close()

    run(scenario())
    again = read_ledger(out).usage
    assert (again.prompt_tokens, again.completion_tokens, again.records) == (157, 33, 3)
    assert again.cost_usd == 0.875 and again.as_dict()["estimated"] is True
    entries = [e for e in map(parse_entry, iter_lines(out.with_name("out.journal.jsonl"))) if e]
    assert [e.usage is not None for e in entries] == [True, True, True, False]
    assert entries[0].record.startswith(b'{"id":"r0"')  # the record bytes are intact


def test_an_entry_with_files_and_usage_parses(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"

    async def scenario() -> None:
        ledger = BatchLedger(out, "b1").load()
        await ledger.add_result(paid(result("r0", seq=0, files=["é.png"]), 1, 2, 0.0))
        await ledger.close()

    run(scenario())
    state = read_ledger(out)
    assert state.pending_downloads() == {"é.png"}
    assert state.usage.total_tokens == 3


def test_unknown_usage_fields_never_reach_the_journal(tmp_path: Path) -> None:
    """A result's `usage` with fields of its own (nested braces) is journaled by its known
    fields only: the entry still parses on reload and keeps its record."""
    out = tmp_path / "out.jsonl"
    usage = UsageLine.model_validate(
        {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5, "estimated": False,
         "cost_usd": 0.5, "x": {"y": "}"}}
    )  # fmt: skip

    async def scenario() -> None:
        ledger = BatchLedger(out, "b1").load()
        await ledger.add_result(result("r0", seq=0).model_copy(update={"usage": usage}))
        await ledger.close()

    run(scenario())
    state = read_ledger(out)
    assert state.is_done(0) and state.usage.total_tokens == 5 and state.usage.cost_usd == 0.5


def test_cached_and_reasoning_tokens_are_summed_live_and_after_a_reload(tmp_path: Path) -> None:
    """The details an answer reported (issue 22: the batch's `input_tokens_details` and
    `output_tokens_details`) are summed as they arrive and kept by the journal."""
    out = tmp_path / "out.jsonl"

    def detailed(seq: int, cached: int, reasoning: int) -> ResultMessage:
        usage = UsageLine.model_validate(
            {"prompt_tokens": 2000, "completion_tokens": 40, "total_tokens": 2040,
             "estimated": False, "cost_usd": 0.0, "cached_tokens": cached,
             "reasoning_tokens": reasoning}
        )  # fmt: skip
        return result(f"r{seq}", seq=seq).model_copy(update={"usage": usage})

    async def scenario() -> None:
        ledger = BatchLedger(out, "b1").load()
        await ledger.add_result(detailed(0, 1024, 20))
        await ledger.add_result(detailed(1, 0, 8))
        await ledger.add_result(paid(result("r2", seq=2), 5, 5, 0.0))  # none reported
        u = ledger.usage
        assert (u.cached_tokens, u.reasoning_tokens, u.prompt_tokens) == (1024, 28, 4005)
        await ledger.close()

    run(scenario())
    again = read_ledger(out).usage
    assert (again.cached_tokens, again.reasoning_tokens) == (1024, 28)
    totals = again.as_dict()
    assert (totals["cached_tokens"], totals["reasoning_tokens"]) == (1024, 28)
