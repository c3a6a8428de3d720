"""Record round trip, the `image` alias, and message version checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from gpt4batch.common.messages import (
    AskMessage,
    ChatResponse,
    DownloadJob,
    IErr,
    Record,
    ResultMessage,
)

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample.jsonl"


def test_every_example_line_round_trips_exactly() -> None:
    for line in SAMPLE.read_text(encoding="utf-8").splitlines():
        record = Record.model_validate_json(line)
        assert json.loads(record.to_line()) == json.loads(line)


def test_unknown_fields_survive_a_trip_through_messages() -> None:
    line = (
        '{"id":"x","asks":[{"id":"a","content":"c","lang":"zh"}],'
        '"answers":null,"extra":{"k":[1,2]},"tag":"keep"}'
    )
    msg = AskMessage(batch="b", seq=3, record=Record.model_validate_json(line))
    again = AskMessage.model_validate_json(msg.model_dump_json())
    assert json.loads(again.record.to_line()) == json.loads(line)


def test_answers_and_ierr_are_added_without_touching_the_rest() -> None:
    record = Record.model_validate_json('{"id":"x","asks":[{"id":"a","content":"c"}]}')
    record.answers = [ChatResponse.model_validate({"message_id": "m1", "novel": {"k": 1}})]
    record.iErr = IErr(code=429, message="rate limited")
    out = json.loads(record.to_line())
    assert out == {
        "id": "x",
        "asks": [{"id": "a", "content": "c"}],
        "answers": [{"message_id": "m1", "novel": {"k": 1}}],
        "iErr": {"code": 429, "message": "rate limited"},
    }


@pytest.mark.parametrize(
    ("ask", "expected"),
    [
        ({"images": ["a.jpg", "b.png"]}, ["a.jpg", "b.png"]),
        ({"image": "a.jpg"}, ["a.jpg"]),
        ({"image": ["a.jpg"], "images": ["b.jpg"]}, ["b.jpg", "a.jpg"]),
        ({}, []),
    ],
)
def test_image_and_images_are_both_accepted(ask: dict, expected: list[str]) -> None:
    record = Record.model_validate({"id": "r", "asks": [{"id": "a", "content": "c", **ask}]})
    assert record.asks[0].image_paths() == expected


@pytest.mark.parametrize("model", [AskMessage, ResultMessage])
def test_unknown_message_version_is_rejected_with_a_clear_error(model: type) -> None:
    body = {"v": 9, "batch": "b", "seq": 0, "record": {"id": "r", "asks": []}}
    with pytest.raises(ValidationError, match=r"unsupported \w+ schema version v=9"):
        model.model_validate(body)


def test_bodies_carry_version_and_batch() -> None:
    job = DownloadJob(batch="b", record_id="r", ask_id="a", url="http://x/y", local="n")
    assert json.loads(job.model_dump_json())["v"] == 1
    with pytest.raises(ValidationError):
        DownloadJob.model_validate({"record_id": "r", "ask_id": "a", "url": "u", "local": "n"})


def test_a_message_cannot_redirect_the_token_to_another_host() -> None:
    """URL overrides would let any publisher send the caller's token anywhere."""
    body = {
        "batch": "b",
        "seq": 0,
        "record": {"id": "r", "asks": []},
        "overrides": {"chat_url": "http://evil.example/steal"},
    }
    with pytest.raises(ValidationError, match="chat_url"):
        AskMessage.model_validate(body)


def test_result_record_json_is_the_record_as_received() -> None:
    from gpt4batch.common.messages import IErr, ResultMessage

    body = (
        b'{"v":1,"batch":"b","seq":3,"record":{"zz":1,"id":"r","asks":[{"id":"a",'
        b'"content":"q","image":"x.png"}],"answers":[{"text":"hi"}],"iErr":null}}'
    )
    message = ResultMessage.model_validate_json(body)
    # Written as received: unknown fields and their order, `image` as given (not as a list).
    assert message.record_json() == (
        b'{"zz":1,"id":"r","asks":[{"id":"a","content":"q","image":"x.png"}],'
        b'"answers":[{"text":"hi"}],"iErr":null}'
    )
    record = message.record.model_copy()
    record.iErr = IErr(code=413, message="too large")
    replaced = message.model_copy(update={"record": record})
    assert b'"code":413' in replaced.record_json()  # a replaced record is serialised again
    built = ResultMessage(batch="b", seq=0, record=message.record)
    assert built.record_json() == message.record.to_line().encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"v":1,"batch":"b","seq":3,"record":', "Invalid JSON"),
        (b'[{"v":1,"batch":"b","seq":3}]', "should be an object"),
        (b'{"v":1,"batch":"b","seq":-1,"record":{"id":"r","asks":[]}}', "greater than or equal"),
        (b'{"v":1,"batch":"b","seq":1,"record":{"id":"r","asks":[{"id":1}]}}', "record.asks.0"),
    ],
)
def test_result_parsed_once_still_refuses_what_the_json_validator_refuses(
    body: bytes, reason: str
) -> None:
    from gpt4batch.common.messages import ResultMessage

    with pytest.raises(ValidationError, match=reason):
        ResultMessage.model_validate_json(body)
