"""Table-driven: every kind of bad line, with the line number, field and reason it reports."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gpt4batch.common.messages import ResultMessage
from gpt4batch.services.ingest.reader import RawLine
from gpt4batch.services.ingest.validate import Accepted, Rejected, RejectKind, Validator

GOOD_ASK = {"id": "a1", "content": "hello"}


def line(obj: object, number: int = 7) -> RawLine:
    data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return RawLine(number, data, len(data) + 1)


@pytest.fixture
def validator(tmp_path: Path) -> Validator:
    (tmp_path / "img.png").write_bytes(b"png")
    (tmp_path / "doc.pdf").write_bytes(b"pdf")
    with (tmp_path / "huge.bin").open("wb") as f:
        f.truncate(2048)  # sparse: "over the limit" without writing the bytes
    (tmp_path / "folder").mkdir()
    return Validator(source="in.jsonl", base_dir=tmp_path, max_line_bytes=100, max_file_bytes=1024)


BAD_LINES: list[tuple[str, RawLine, RejectKind, str | None, str]] = [
    ("too long", RawLine(7, None, 5000), RejectKind.LINE_TOO_LONG, None, "5000 bytes"),
    ("broken json", line(b'{"id": "x", '), RejectKind.INVALID_JSON, None, "invalid JSON"),
    ("not utf-8", line(b'{"id": "\xff"}'), RejectKind.INVALID_JSON, None, "UTF-8"),
    ("NaN", line(b'{"id": "x", "v": NaN}'), RejectKind.INVALID_JSON, None, "NaN"),
    ("array", line([1, 2]), RejectKind.NOT_OBJECT, None, "got array"),
    ("string", line("x"), RejectKind.NOT_OBJECT, None, "got string"),
    ("no id", line({"asks": [GOOD_ASK]}), RejectKind.BAD_ID, "id", "missing id"),
    ("empty id", line({"id": " ", "asks": [GOOD_ASK]}), RejectKind.BAD_ID, "id", "empty id"),
    ("number id", line({"id": 3, "asks": [GOOD_ASK]}), RejectKind.BAD_ID, "id", "got number"),
    ("no asks", line({"id": "r"}), RejectKind.BAD_ASKS, "asks", "missing asks"),
    ("null asks", line({"id": "r", "asks": None}), RejectKind.BAD_ASKS, "asks", "missing asks"),
    ("empty asks", line({"id": "r", "asks": []}), RejectKind.BAD_ASKS, "asks", "asks is empty"),
    ("asks object", line({"id": "r", "asks": {}}), RejectKind.BAD_ASKS, "asks", "got object"),
    ("ask string", line({"id": "r", "asks": ["hi"]}), RejectKind.BAD_ASK, "asks[0]", "object"),
    (
        "ask without id",
        line({"id": "r", "asks": [GOOD_ASK, {"content": "x"}]}),
        RejectKind.BAD_ASK,
        "asks[1].id",
        "missing ask id",
    ),
    (
        "ask without content",
        line({"id": "r", "asks": [{"id": "a"}]}),
        RejectKind.BAD_ASK,
        "asks[0].content",
        "missing content",
    ),
    (
        "empty content",
        line({"id": "r", "asks": [{"id": "a", "content": "  "}]}),
        RejectKind.BAD_ASK,
        "asks[0].content",
        "empty content",
    ),
    (
        "content not text",
        line({"id": "r", "asks": [{"id": "a", "content": 5}]}),
        RejectKind.BAD_ASK,
        "asks[0].content",
        "must be a string",
    ),
    (
        "images not a list",
        line({"id": "r", "asks": [{**GOOD_ASK, "images": 5}]}),
        RejectKind.BAD_ASK,
        "asks[0].images",
        "array of paths",
    ),
    (
        "missing image",
        line({"id": "r", "asks": [{**GOOD_ASK, "images": ["img.png", "nope.png"]}]}),
        RejectKind.MISSING_FILE,
        "asks[0].images[1]",
        "file not found",
    ),
    (
        "missing README image",
        line({"id": "r", "asks": [{**GOOD_ASK, "image": "gone.jpg"}]}),
        RejectKind.MISSING_FILE,
        "asks[0].image",
        "gone.jpg",
    ),
    (
        "missing file",
        line({"id": "r", "asks": [GOOD_ASK, {**GOOD_ASK, "files": ["/no/such.pdf"]}]}),
        RejectKind.MISSING_FILE,
        "asks[1].files[0]",
        "/no/such.pdf",
    ),
    (
        "folder as file",
        line({"id": "r", "asks": [{**GOOD_ASK, "files": ["folder"]}]}),
        RejectKind.MISSING_FILE,
        "asks[0].files[0]",
        "not a regular file",
    ),
    (
        "oversize file",
        line({"id": "r", "asks": [{**GOOD_ASK, "files": ["huge.bin"]}]}),
        RejectKind.FILE_TOO_LARGE,
        "asks[0].files[0]",
        "2048 bytes, over the 1024-byte limit",
    ),
    (
        "answers of the wrong type",
        line({"id": "r", "asks": [GOOD_ASK], "answers": "yes"}),
        RejectKind.INVALID_RECORD,
        "answers",
        "list",
    ),
]


@pytest.mark.parametrize(
    ("given", "kind", "field", "reason"),
    [case[1:] for case in BAD_LINES],
    ids=[case[0] for case in BAD_LINES],
)
def test_bad_line_is_rejected_with_where_and_why(
    validator: Validator, given: RawLine, kind: RejectKind, field: str | None, reason: str
) -> None:
    verdict = validator.check(given)

    assert isinstance(verdict, Rejected)
    assert verdict.kind == kind
    assert verdict.reject.line == 7
    assert verdict.reject.field == field
    assert verdict.reject.source == "in.jsonl"
    assert reason in verdict.reject.reason
    ierr = verdict.output.iErr
    assert ierr is not None and ierr.code == 422
    assert "line 7" in ierr.message and reason in ierr.message
    # The output record must travel as a valid ResultMessage.
    body = ResultMessage(batch="b", seq=0, record=verdict.output, reject=verdict.reject)
    ResultMessage.model_validate_json(body.model_dump_json())


def test_duplicate_id_names_the_first_line(validator: Validator) -> None:
    first = validator.check(line({"id": "r", "asks": [GOOD_ASK]}, number=2))
    again = validator.check(line({"id": "r", "asks": [GOOD_ASK]}, number=9))

    assert isinstance(first, Accepted)
    assert isinstance(again, Rejected)
    assert again.kind == RejectKind.DUPLICATE_ID
    assert (again.reject.line, again.reject.field, again.reject.id) == (9, "id", "r")
    assert "first on line 2" in again.reject.reason


def test_rejected_object_keeps_its_keys_and_gets_ierr(validator: Validator) -> None:
    obj = {"id": "r", "asks": [{"id": "a"}], "extra": {"k": 1}, "custom": "kept"}

    verdict = validator.check(line(obj))

    assert isinstance(verdict, Rejected)
    out = json.loads(verdict.output.to_line())
    assert out["id"] == "r" and out["extra"] == {"k": 1} and out["custom"] == "kept"
    assert out["asks"] == [{"id": "a"}] or out["asks"] == []
    assert out["iErr"]["code"] == 422


def test_invalid_asks_become_empty_in_the_output(validator: Validator) -> None:
    verdict = validator.check(line({"id": "r", "asks": "what", "extra": 1}))

    assert isinstance(verdict, Rejected)
    out = json.loads(verdict.output.to_line())
    assert out["asks"] == [] and out["extra"] == 1 and out["id"] == "r"


def test_line_without_usable_id_gets_a_line_id(validator: Validator) -> None:
    verdict = validator.check(line(b"not json", number=12))

    assert isinstance(verdict, Rejected)
    assert verdict.reject.id is None
    out = json.loads(verdict.output.to_line())
    assert out["id"] == "line:12" and out["asks"] == [] and out["answers"] is None


def test_good_line_with_existing_relative_and_absolute_paths(
    validator: Validator, tmp_path: Path
) -> None:
    ask = {**GOOD_ASK, "images": ["img.png"], "image": str(tmp_path / "img.png")}
    ask["files"] = "doc.pdf"
    given = line({"id": "r", "asks": [ask]})

    verdict = validator.check(given)

    assert isinstance(verdict, Accepted)
    assert verdict.json == given.data  # carried byte-for-byte
    assert not verdict.passthrough


def test_fix_passes_successes_through_and_reruns_failures(tmp_path: Path) -> None:
    v = Validator(source="out.jsonl", base_dir=tmp_path, fix=True)
    done = {"id": "ok", "asks": [GOOD_ASK], "answers": [{"message_id": "m"}], "iErr": None}
    failed = {"id": "bad", "asks": [GOOD_ASK], "answers": [], "iErr": {"code": 500, "message": "x"}}

    ok, rerun = v.check(line(done)), v.check(line(failed))

    assert isinstance(ok, Accepted) and ok.passthrough
    assert isinstance(rerun, Accepted) and not rerun.passthrough
    assert json.loads(rerun.json) == {**failed, "answers": None, "iErr": None}


def test_paths_are_checked_with_stat_once_per_path(tmp_path: Path) -> None:
    calls: list[str] = []

    def counting_stat(path: str) -> os.stat_result:
        calls.append(path)
        return os.stat(path)

    (tmp_path / "i.png").write_bytes(b"x")
    v = Validator(source="s", base_dir=tmp_path, stat=counting_stat)
    for n in range(3):
        v.check(line({"id": f"r{n}", "asks": [{**GOOD_ASK, "images": ["i.png"]}]}))

    assert calls == [str(tmp_path / "i.png")]


@pytest.mark.parametrize(
    "line",
    [
        b'{"id":"s","asks":[{"id":"a","content":"\\ud800"}]}',  # lone surrogate escape
        b'{"id":"d","asks":[{"id":"a","content":"x"}],"extra":'
        + b"[" * 3000
        + b"]" * 3000
        + b"}",  # nesting the consumers' parser refuses
    ],
)
def test_lines_consumers_could_not_decode_are_refused_here(line: bytes) -> None:
    """Python's json accepts these; pydantic (what every consumer uses) does not."""
    validator = Validator(
        source="in.jsonl", base_dir=Path("/tmp"), fix=False, max_line_bytes=1 << 20,
        max_file_bytes=1 << 20,
    )  # fmt: skip
    verdict = validator.check(RawLine(1, line, len(line)))
    assert isinstance(verdict, Rejected)
    assert verdict.kind == RejectKind.INVALID_JSON


def test_ids_of_the_form_line_n_are_reserved_so_they_never_clash(tmp_path: Path) -> None:
    v = Validator(source="in.jsonl", base_dir=tmp_path)
    unreadable = v.check(line(b"{broken", number=3))
    real = v.check(line({"id": "line:3", "asks": [GOOD_ASK]}, number=9))
    assert isinstance(unreadable, Rejected) and isinstance(real, Rejected)
    assert real.kind == RejectKind.BAD_ID and "reserved" in real.reject.reason
    assert real.reject.field == "id" and real.reject.id is None
    ids = {unreadable.output.id, real.output.id}
    assert ids == {"line:3", "line:9"}  # each names its own line
    assert isinstance(v.check(line({"id": "line:x", "asks": [GOOD_ASK]}, 10)), Accepted)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"id": "r", "asks": [{"id": "a", "content": "c"}], "extra": 1e999}', "extra"),
        (b'{"id": "r", "asks": [{"id": "a", "content": "c", "w": [1, -2E+400]}]}', "asks[0].w[1]"),
        (b'{"id": "r", "asks": [{"id": "a", "content": "c"}], "n": ' + b"9" * 400 + b".5}", "n"),
    ],
)
def test_numbers_too_big_for_a_float_are_refused_not_nulled(
    tmp_path: Path, raw: bytes, field: str
) -> None:
    verdict = Validator(source="in.jsonl", base_dir=tmp_path).check(line(raw, number=4))
    assert isinstance(verdict, Rejected), verdict
    assert verdict.kind == RejectKind.BAD_NUMBER and verdict.reject.field == field
    assert "out of range" in verdict.reject.reason


def test_ordinary_exponents_and_text_that_looks_like_one_are_accepted(tmp_path: Path) -> None:
    v = Validator(source="in.jsonl", base_dir=tmp_path)
    ok = {"id": "r", "asks": [{"id": "a", "content": "is 1e999 big?"}], "extra": 1e300}
    assert isinstance(v.check(line(ok)), Accepted)


def test_records_over_the_asks_limit_are_refused_with_a_reason(tmp_path: Path) -> None:
    from gpt4batch.services.ingest.validate import MAX_ASKS

    v = Validator(source="in.jsonl", base_dir=tmp_path)
    asks = [{"id": f"a{i}", "content": "q"} for i in range(MAX_ASKS + 1)]
    verdict = v.check(line({"id": "big", "asks": asks}))
    assert isinstance(verdict, Rejected) and verdict.kind == RejectKind.TOO_MANY_ASKS
    assert verdict.reject.field == "asks"
    assert f"{MAX_ASKS + 1} asks, over the limit of {MAX_ASKS}" in verdict.reject.reason
    assert isinstance(v.check(line({"id": "max", "asks": asks[:MAX_ASKS]})), Accepted)
