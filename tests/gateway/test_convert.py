"""Batch API lines → asks and ledger records → Batch API output lines, without NSQ."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from gpt4batch.common.endpoints import CHAT
from gpt4batch.common.messages import AskMessage, IErr
from gpt4batch.common.received_answer import kept
from gpt4batch.common.upstreams import UpstreamConfig
from gpt4batch.services.caller.requests import prepared
from gpt4batch.services.gateway.convert import convert_file
from gpt4batch.services.gateway.result_lines import output_json, output_line
from gpt4batch.services.gateway.serving import Serving
from gpt4batch.services.mock_upstream import shapes

#: A fleet of chat-only callers (gpt4api.plus): chat lines must fit their asks.
CHAT_ONLY = Serving(frozenset({CHAT}), converts_chat=True)


def line(custom_id: str, messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    body = {"model": "m-1", "messages": messages, **extra}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def convert(
    tmp_path: Path,
    lines: list[Any],
    max_msg_size: int = 1 << 20,
    owned: frozenset[str] = frozenset(),
    serving: Serving | None = None,
    endpoint: str = CHAT,
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
        endpoint=endpoint,
        max_line_bytes=4096,
        max_msg_size=max_msg_size,
        serving=serving,
    )
    asks = [AskMessage.model_validate_json(x) for x in out.getvalue().splitlines()]
    return result, asks


def as_ask(msg: AskMessage, kind: str = "gpt4api") -> AskMessage:
    """The message as a caller of a chat-only `kind` runs it."""
    ready = prepared(msg, kind)
    assert isinstance(ready, AskMessage), ready
    return ready


def test_a_request_travels_whole_and_a_chat_only_caller_makes_it_an_ask(tmp_path: Path) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "and"}, {"type": "text", "text": "3+3?"}],
        },
    ]
    lines = [line("a", messages, n=2, tools=[{"type": "function"}]), "", line("b", messages[:2])]
    result, sent = convert(tmp_path, lines)

    assert (result.format, result.total, result.errors) == ("openai", 2, [])
    assert sent[0].request is not None and sent[0].request.endpoint == CHAT
    assert sent[0].request.body == lines[0]["body"]  # every field, n and tools too
    assert prepared(sent[0], "openai") is sent[0]  # an OpenAI-style caller sends it whole
    asks = [as_ask(msg) for msg in sent]
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
    result, _ = convert(tmp_path, lines, max_msg_size=2048, serving=CHAT_ONLY)

    found = {(e["line"], e["code"], e["param"]) for e in result.errors}
    lenient, _ = convert(tmp_path, lines, max_msg_size=2048)  # OpenAI-style callers take 5, 6
    assert {(e["line"], e["code"]) for e in lenient.errors} == {
        (e[0], e[1]) for e in found if e[0] not in (5, 6)
    }
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
    result, _ = convert(tmp_path, lines, serving=CHAT_ONLY)
    assert [(e["line"], e["code"], e["param"]) for e in result.errors] == [
        (2, "invalid_value", "body.temperature")
    ]
    _, sent = convert(tmp_path, lines[:1])
    overrides = as_ask(sent[0]).overrides
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


def test_a_request_a_chat_only_caller_cannot_take_is_an_error_result_not_a_call(
    tmp_path: Path,
) -> None:
    responses = {"custom_id": "r", "method": "POST", "url": "/v1/responses",
                 "body": {"model": "m", "input": "hi"}}  # fmt: skip
    _, [msg] = convert(tmp_path, [responses], endpoint="/v1/responses")
    refused = prepared(msg, "gpt4api")
    assert isinstance(refused, IErr) and refused.code == 584
    assert "/v1/responses" in refused.message
    _, [chat] = convert(tmp_path, [line("a", [{"role": "assistant", "content": "x"}])])
    refused = prepared(chat, "chatgpt-service")  # accepted while no caller said its kind
    assert isinstance(refused, IErr) and "last message" in refused.message


def test_an_endpoint_the_fleet_does_not_serve_fails_the_batch_with_one_error(
    tmp_path: Path,
) -> None:
    lines = [{"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
              "body": {"model": "m", "input": "x"}} for i in range(3)]  # fmt: skip
    result, _ = convert(tmp_path, lines, serving=CHAT_ONLY, endpoint="/v1/embeddings")
    [error] = result.errors
    assert (error["code"], error["param"], error["line"]) == (
        "unsupported_endpoint",
        "endpoint",
        None,
    )
    assert "/v1/embeddings" in error["message"]
    result, sent = convert(tmp_path, lines, endpoint="/v1/embeddings")  # nothing known: runs
    assert result.errors == [] and len(sent) == 3


def test_each_endpoint_needs_its_input_and_no_stream(tmp_path: Path) -> None:
    def req(url: str, **body: Any) -> dict[str, Any]:
        return {"custom_id": url + str(len(body)), "method": "POST", "url": url, "body": body}

    cases = {
        "/v1/embeddings": ([req("/v1/embeddings", model="m")], "body.input"),
        "/v1/completions": ([req("/v1/completions", model="m")], "body.prompt"),
        "/v1/responses": ([req("/v1/responses", model="m", input="x", stream=True)],
                          "body.stream"),
    }  # fmt: skip
    for endpoint, (lines, param) in cases.items():
        result, _ = convert(tmp_path, lines, endpoint=endpoint)
        assert [e["param"] for e in result.errors] == [param], endpoint


def test_an_answer_is_written_as_the_bytes_the_upstream_sent() -> None:
    """Pretty-printed, escaped, with numbers as the upstream spelt them: the output line's
    body is that text (line breaks dropped), not the JSON written again."""
    received = (
        b'{\n  "object": "embedding.list",\n  "data": [1.50, 1e-05, -0.0],\n'
        b'  "name": "caf\\u00e9"\n}\n'
    )
    answer = json.loads(received)
    record = {"id": "e1", "asks": [], "answers": [kept(answer, received)], "iErr": None}
    data, good = output_json("b1", record, "/v1/embeddings")
    assert good and b"\n" not in data
    body_text = (
        b'{  "object": "embedding.list",  "data": [1.50, 1e-05, -0.0],  "name": "caf\\u00e9"}'
    )
    assert data.endswith(b'"body": ' + body_text + b'}, "error": null}')
    line = json.loads(data)
    assert line["response"]["body"] == answer and line["custom_id"] == "e1"
    assert output_line("b1", record, "/v1/embeddings")[0] == line  # the same line, parsed
    assert kept(answer, None) is answer  # an assembled stream: kept parsed
