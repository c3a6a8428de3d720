"""The caller builds a result's JSON from the ask's record as received and the answers as
the upstream sent them; it must say what the model round trip (`ResultMessage(...)
.model_dump_json()`, the way it was built before) says."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gpt4batch.common.messages import (
    AskMessage,
    ChatResponse,
    FeedMessage,
    IErr,
    Record,
    ResultMessage,
    result_json,
)
from gpt4batch.services.caller.conversation import Outcome
from gpt4batch.services.caller.feed import feed_bodies

ANSWER = {
    "message_id": "m1",
    "conversation_id": "c1",
    "created": 1700000000,
    "end_turn": True,
    "contents": [{"content_type": "text", "content": "héllo ✓"}],
    "downloads": ["https://files.example/x.png"],
    "spec_downloads": [{"origin": "https://files.example/x.png", "local": "GPT4API_x.png"}],
    "model": "gpt-4",
    "usage": {"tokens": 3},
}

#: Records whose asks' keys are in the models' order and whose values need no coercion:
#: the raw path gives the very same bytes (the record's own keys it puts in model order).
CANONICAL = [
    {"id": "r1", "asks": [{"id": "a1", "content": "hi"}]},
    {"id": "r2", "asks": [{"id": "a1", "content": 'ünïcode ✓ "quoted"\n'}], "note": {"k": [1]}},
    {"id": "r3", "asks": [{"id": "a1", "content": "x", "images": ["i.png"], "files": []}]},
    {"id": "r4", "asks": [{"id": "a1", "content": "x"}], "extra": {"tag": 1.5}, "z": None},
    {"meta": "first", "asks": [{"id": "a1", "content": "x"}], "id": "r9"},
]

#: Records whose nested values the models reorder or coerce (an ask's keys in another
#: order, `image` as one string, a previous run's answers and iErr): the raw path keeps
#: them as sent; the meaning is the same.
REORDERED = [
    {"id": "r5", "asks": [{"content": "x", "id": "a1"}]},
    {"id": "r6", "asks": [{"id": "a1", "content": "x", "image": "one.png"}]},
    {"id": "r7", "asks": [{"id": "a1", "content": "x"}], "iErr": {"code": 500, "message": "old"}},
    {"id": "r8", "answers": [{"message_id": "old"}], "asks": [{"id": "a1", "content": "x"}]},
]


def received(record: dict[str, Any], seq: int = 3) -> AskMessage:
    body = json.dumps({"v": 1, "batch": "b1", "seq": seq, "record": record}).encode()
    return AskMessage.model_validate_json(body)


def old_body(msg: AskMessage, outcome: Outcome, planned: list[str]) -> bytes:
    """How the caller built a result before: the record copied, answers validated, dumped."""
    record = msg.record.model_copy()
    record.answers = [ChatResponse.model_validate(a) for a in outcome.answers]
    record.iErr = outcome.error
    record.usage = outcome.usage.as_line()  # type: ignore[attr-defined]  # (an extra field)
    result = ResultMessage(
        batch=msg.batch,
        seq=msg.seq,
        record=record,
        planned_downloads=planned,
        usage=outcome.usage.as_line(),
    )
    return result.model_dump_json().encode()


def new_body(msg: AskMessage, outcome: Outcome, planned: list[str]) -> bytes:
    record = outcome.record_object(msg.record_object())
    return result_json(msg.batch, msg.seq, record, planned, record["usage"])


def outcomes(msg: AskMessage) -> list[Outcome]:
    return [
        Outcome(msg.record, [dict(ANSWER)]),
        Outcome(msg.record, [], IErr(code=502, message="ask a1: bad gateway")),
        Outcome(msg.record, [dict(ANSWER), {**ANSWER, "message_id": "m2"}]),
    ]


def canonical_dump(body: bytes) -> Any:
    """What the sink makes of a body: validated, then dumped through the models."""
    return json.loads(ResultMessage.model_validate_json(body).model_dump_json())


@pytest.mark.parametrize("record", CANONICAL)
def test_the_raw_result_is_byte_identical_for_records_in_model_order(
    record: dict[str, Any],
) -> None:
    msg = received(record)
    for outcome in outcomes(msg):
        planned = ["GPT4API_x.png"] if outcome.ok else []
        assert new_body(msg, outcome, planned) == old_body(msg, outcome, planned)


@pytest.mark.parametrize("record", CANONICAL + REORDERED)
def test_the_raw_result_means_what_the_model_round_trip_means(record: dict[str, Any]) -> None:
    msg = received(record)
    for outcome in outcomes(msg):
        new, old = new_body(msg, outcome, []), old_body(msg, outcome, [])
        assert canonical_dump(new) == canonical_dump(old)
        # The record written is the input record as sent, plus answers, iErr and usage.
        written = json.loads(ResultMessage.model_validate_json(new).record_json())
        ours = ("answers", "iErr", "usage")
        assert {k: v for k, v in written.items() if k not in ours} == {
            k: v for k, v in record.items() if k not in ours
        }
        assert written["usage"] == outcome.usage.as_line()
        assert written["answers"] == outcome.answers
        assert written["iErr"] == (outcome.error.model_dump() if outcome.error else None)


def test_unknown_fields_of_an_answer_and_their_order_are_kept_as_sent() -> None:
    msg = received(CANONICAL[0])
    answer = {"zeta": 1, "message_id": "m1", "alpha": {"nested": ["é"]}}
    body = new_body(msg, Outcome(msg.record, [answer]), [])
    assert json.loads(body)["record"]["answers"] == [answer]
    assert list(json.loads(body)["record"]["answers"][0]) == ["zeta", "message_id", "alpha"]


def test_a_message_built_in_code_is_serialised_through_its_model() -> None:
    record = Record.model_validate(CANONICAL[1])
    msg = AskMessage(batch="b1", seq=3, record=record)
    outcome = Outcome(msg.record, [dict(ANSWER)])
    assert msg.record_object() == record.model_dump(mode="json")
    assert new_body(msg, outcome, []) == old_body(msg, outcome, [])


def test_the_outcome_record_is_the_model_the_caller_built_before() -> None:
    msg = received(REORDERED[1])
    outcome = Outcome(msg.record, [dict(ANSWER)], None)
    assert outcome.record.answers == [ChatResponse.model_validate(ANSWER)]
    assert outcome.record.iErr is None
    assert outcome.record.asks == msg.record.asks
    assert msg.record.answers is None  # the received record is not changed


def test_feed_bodies_are_the_feed_messages_the_models_made() -> None:
    msg = received(CANONICAL[0])
    answers = [dict(ANSWER)]
    got = feed_bodies(msg.record.asks, answers, "/downloads")
    want = [
        FeedMessage(
            ask="hi", answer=ChatResponse.model_validate(ANSWER).model_dump(mode="json"),
            dir="/downloads",
        ).model_dump_json().encode()
    ]  # fmt: skip
    assert got == want
    assert FeedMessage.model_validate_json(got[0]).answer == ANSWER
