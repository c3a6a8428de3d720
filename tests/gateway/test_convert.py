"""Batch API lines → asks and ledger records → Batch API output lines, without NSQ."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from gpt4batch.common.messages import AskMessage
from gpt4batch.common.upstreams import UpstreamConfig
from gpt4batch.services.gateway.convert import convert_file, output_line
from gpt4batch.services.mock_upstream import shapes


def line(custom_id: str, messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    body = {"model": "m-1", "messages": messages, **extra}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def convert(
    tmp_path: Path,
    lines: list[Any],
    max_msg_size: int = 1 << 20,
    owned: frozenset[str] = frozenset(),
) -> Any:
    source = tmp_path / "in.jsonl"
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    source.write_text(text)
    out = io.BytesIO()
    result = convert_file(
        source,
        out,
        owned_files=owned,
        batch="b1",
        endpoint="/v1/chat/completions",
        max_line_bytes=4096,
        max_msg_size=max_msg_size,
    )
    asks = [AskMessage.model_validate_json(x) for x in out.getvalue().splitlines()]
    return result, asks


def test_a_request_becomes_one_ask_with_its_history_and_model(tmp_path: Path) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "and"}, {"type": "text", "text": "3+3?"}],
        },
    ]
    result, asks = convert(tmp_path, [line("a", messages), "", line("b", messages[:2])])

    assert (result.format, result.total, result.errors) == ("openai", 2, [])
    first = asks[0]
    assert (first.batch, first.seq, first.record.id) == ("b1", 0, "a")
    assert [a.content for a in first.record.asks] == ["and\n3+3?"]
    assert first.history == messages[:3]
    assert first.overrides is not None and first.overrides.model == "m-1"
    assert asks[1].seq == 1 and asks[1].history == messages[:1]


def test_every_bad_line_is_reported_with_its_number(tmp_path: Path) -> None:
    ok = line("ok", [{"role": "user", "content": "hi"}])
    image = [{"type": "image_url", "image_url": {"url": "http://x/1.png"}}]
    lines = [
        ok,
        "[1, 2]",
        {**ok, "custom_id": ""},
        {**ok, "custom_id": "m", "method": "GET"},
        line("n", [{"role": "assistant", "content": "last is not a user"}]),
        line("i", [{"role": "user", "content": image}]),
        {**ok, "custom_id": "x", "body": {"messages": [{"role": "user", "content": "no model"}]}},
        "x" * 5000,
        line("big", [{"role": "user", "content": "y" * 3000}]),
    ]
    result, _ = convert(tmp_path, lines, max_msg_size=2048)

    found = {(e["line"], e["code"], e["param"]) for e in result.errors}
    assert found == {
        (2, "invalid_json_line", None),
        (3, "invalid_custom_id", "custom_id"),
        (4, "invalid_method", "method"),
        (5, "invalid_message", "body.messages[0]"),
        (6, "unsupported_content", "body.messages[0].content"),
        (7, "missing_required_parameter", "body.model"),
        (8, "line_too_long", None),
        (9, "request_too_large", None),
    }


def test_gpt4batch_records_are_detected_and_checked_like_ingest(tmp_path: Path) -> None:
    records = [
        {"id": "r1", "asks": [{"id": "1", "content": "hi"}], "extra": {"k": 1}},
        {"id": "r1", "asks": [{"id": "1", "content": "dup"}]},
        {"id": "r3", "asks": []},
    ]
    result, _ = convert(tmp_path, records)

    assert result.format == "gpt4batch"
    assert [(e["line"], e["code"]) for e in result.errors] == [(2, "duplicate_id"), (3, "bad_asks")]
    result, asks = convert(tmp_path, records[:1])
    assert result.errors == [] and asks[0].record.extra == {"k": 1} and asks[0].history is None


def test_output_lines_have_the_batch_api_shape() -> None:
    completion = shapes.completion("chatcmpl-1", "m-1", "four", 8, 1)
    ok, good = output_line("b1", {"id": "a", "asks": [], "answers": [completion]})
    assert good and ok["custom_id"] == "a" and ok["error"] is None
    assert ok["response"]["status_code"] == 200
    assert ok["response"]["body"]["choices"][0]["message"]["content"] == "four"
    assert "message_id" not in ok["response"]["body"]

    rate_limited = {"id": "b", "asks": [], "answers": [], "iErr": {"code": 429, "message": "slow"}}
    failed, good = output_line("b1", rate_limited)
    assert not good and failed["response"]["status_code"] == 429
    assert failed["response"]["body"]["error"]["message"] == "slow"

    ours = {"id": "c", "asks": [], "iErr": {"code": 599, "message": "internal error: boom"}}
    failed, good = output_line("b1", ours)
    assert not good and failed["response"] is None
    assert failed["error"] == {"code": "internal", "message": "internal error: boom"}


def test_a_gpt4api_answer_becomes_a_chat_completion() -> None:
    answer = shapes.chat_answer(
        body={"message": "hello", "model": "gpt-4"},
        conversation_id="c1",
        message_id="m1",
        user_message_id="u1",
        parent_id="p1",
        request_id="r1",
        downloads=[],
    )
    line_, good = output_line("b1", {"id": "g", "asks": [], "answers": [answer]})

    body = line_["response"]["body"]
    assert good and body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": shapes.answer_text("hello", 0, 0),
        "refusal": None,
    }


def test_sampling_fields_of_the_body_reach_the_upstream_call(tmp_path: Path) -> None:
    user = [{"role": "user", "content": "hi"}]
    lines = [
        line("s", user, temperature=0.2, max_completion_tokens=50, top_p=1, tools=[]),
        line("t", user, temperature=7),
    ]
    result, _ = convert(tmp_path, lines)
    assert [(e["line"], e["code"], e["param"]) for e in result.errors] == [
        (2, "invalid_value", "body.temperature")
    ]
    _, asks = convert(tmp_path, lines[:1])
    overrides = asks[0].overrides
    assert overrides is not None
    config = UpstreamConfig(kind="openai").with_overrides(overrides)
    assert config.model == "m-1"
    assert config.sampling.as_body() == {"temperature": 0.2, "top_p": 1, "max_tokens": 50}


def test_a_record_may_name_only_files_of_its_own_key_never_host_paths(tmp_path: Path) -> None:
    secret = tmp_path.parent / "id_rsa"
    secret.write_text("PRIVATE")
    mine, theirs = "file-" + "a" * 24, "file-" + "b" * 24
    for name in (mine, theirs):
        (tmp_path / name).write_bytes(b"\x89PNG")
    refs = [str(secret), "/root/.ssh/id_rsa", "../id_rsa", theirs, str(tmp_path / theirs)]
    records = [
        {"id": f"r{i}", "asks": [{"id": "1", "content": "x", "files": [ref]}]}
        for i, ref in enumerate(refs)
    ]
    records.append({"id": "ok", "asks": [{"id": "1", "content": "x", "images": [mine]}]})

    result, _ = convert(tmp_path, records, owned=frozenset({mine}))

    assert [(e["line"], e["code"]) for e in result.errors] == [
        (n, "missing_file") for n in range(1, 6)
    ]
    # the same words whether the path exists (the secret) or not: nothing is told
    assert len({e["message"] for e in result.errors}) == 1
    assert not any(
        str(tmp_path.parent) in e["message"] or "id_rsa" in e["message"] for e in result.errors
    )
    result, asks = convert(tmp_path, records[-1:], owned=frozenset({mine}))
    assert result.errors == [] and asks[0].base_dir == str(tmp_path)
