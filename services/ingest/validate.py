"""One input line → an accepted Record or a Reject with line, field and reason.

The checks mirror what would otherwise fail later and far away (in the caller,
minutes into a run): broken JSON, a record without id or asks, an ask without
content, a duplicate id, a referenced image/file that is missing or too big.
Each failure names the field so a user can fix the line.
"""

from __future__ import annotations

import json
import os
import re
import stat as stat_mod
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import pydantic_core
from pydantic import ValidationError

from gpt4batch.common.idindex import IdIndex
from gpt4batch.common.messages import REJECT_CODE, Record, Reject, reject_message
from gpt4batch.services.ingest.reader import RawLine

# REJECT_CODE (422) and the message format are the sink's contract: common/messages/results.py
PATH_KEYS = ("images", "image", "files")
MIB = 1024 * 1024

#: Most asks one record may hold. A record is one conversation run by one caller
#: within one NSQ message's timeout, and its result travels as one message (or a
#: few parts): thousands of asks are a mistake far more often than a conversation.
MAX_ASKS = 100

#: Prefix of the ids given to lines whose own id cannot be read (`line:17`);
#: an input id of that form is refused so the two can never be confused.
LINE_ID = re.compile(r"line:\d+")

#: A number that may overflow a float (huge exponent or 309+ digits); only lines
#: containing one are searched for the value that became infinite.
_HUGE_NUMBER = re.compile(rb"\d[eE]\+?\d{3,}|\d{309,}")


class RejectKind(StrEnum):
    """Reason classes, used as the metrics label."""

    LINE_TOO_LONG = "line_too_long"
    INVALID_JSON = "invalid_json"
    NOT_OBJECT = "not_object"
    BAD_ID = "bad_id"
    DUPLICATE_ID = "duplicate_id"
    BAD_ASKS = "bad_asks"
    BAD_ASK = "bad_ask"
    INVALID_RECORD = "invalid_record"
    MISSING_FILE = "missing_file"
    FILE_TOO_LARGE = "file_too_large"
    MESSAGE_TOO_LARGE = "message_too_large"
    TOO_MANY_ASKS = "too_many_asks"
    BAD_NUMBER = "bad_number"


@dataclass(frozen=True, slots=True)
class Problem:
    kind: RejectKind
    field: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Accepted:
    record: Record
    json: bytes
    """The record as JSON to carry on the bus: the input line itself unless --fix changed it."""
    passthrough: bool = False
    """--fix: the record already succeeded; it goes to results unchanged."""


@dataclass(frozen=True, slots=True)
class Rejected:
    kind: RejectKind
    reject: Reject
    output: Record
    """The output line for this input line, with `iErr` explaining the rejection."""


Verdict = Accepted | Rejected
StatFn = Callable[[str], os.stat_result]


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class Validator:
    """Validates lines of one input; remembers ids to catch duplicates."""

    def __init__(
        self,
        *,
        source: str,
        base_dir: Path,
        fix: bool = False,
        max_line_bytes: int = 10 * MIB,
        max_file_bytes: int = 100 * MIB,
        max_asks: int = MAX_ASKS,
        stat: StatFn = os.stat,
    ) -> None:
        self.max_asks = max_asks
        self.source = source
        self.base_dir = base_dir
        self.fix = fix
        self.max_line_bytes = max_line_bytes
        self.max_file_bytes = max_file_bytes
        self._stat = stat
        self._seen = IdIndex()  # ~8 MB of memory per million ids, the ids on disk
        self._path_cache: dict[str, Problem | None] = {}

    def check(self, line: RawLine) -> Verdict:
        try:
            return self._check(line)
        except _Fail as fail:
            return self.reject(line.number, fail.obj, fail.problem)

    def reject(self, number: int, obj: Any, problem: Problem) -> Rejected:
        """A Rejected verdict whose output keeps what can be kept of the line."""
        record_id = obj.get("id") if isinstance(obj, dict) else None
        if not _usable_id(record_id):
            record_id = None
        ierr = {
            "code": REJECT_CODE,
            "message": reject_message(number, problem.field, problem.reason),
        }
        reject = Reject(
            line=number,
            id=record_id,
            field=problem.field,
            reason=problem.reason,
            source=self.source,
        )
        return Rejected(problem.kind, reject, rejected_output(number, obj, record_id, ierr))

    def _check(self, line: RawLine) -> Verdict:
        if line.data is None:
            raise _Fail(
                RejectKind.LINE_TOO_LONG,
                None,
                f"line of {line.size} bytes is over the {self.max_line_bytes}-byte limit",
            )
        try:
            # The parser the consumers use (pydantic's): a line they could not
            # decode (a lone surrogate escape, absurd nesting, NaN) is refused here.
            obj = pydantic_core.from_json(line.data, allow_inf_nan=False)
        except (ValueError, RecursionError) as exc:
            raise _Fail(RejectKind.INVALID_JSON, None, _explain(line.data, exc)) from None
        if not isinstance(obj, dict):
            raise _Fail(
                RejectKind.NOT_OBJECT, None, f"expected a JSON object, got {json_type(obj)}"
            )
        if _HUGE_NUMBER.search(line.data):
            field = _non_finite(obj)
            if field is not None:
                raise _Fail(
                    RejectKind.BAD_NUMBER,
                    field,
                    "number out of range (it would become null); write it as a string",
                )
        try:
            return self._check_object(line.number, obj, line.data)
        except _Fail as fail:
            fail.obj = obj
            raise

    def _check_object(self, number: int, obj: dict[str, Any], data: bytes) -> Verdict:
        self._check_id(number, obj)
        if self.fix:
            if obj.get("iErr") is None and obj.get("answers") is not None:
                return Accepted(_to_record(obj), data, passthrough=True)
            obj = {**obj, "answers": None, "iErr": None}
            data = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
        asks = _check_asks(obj)
        if len(asks) > self.max_asks:
            raise _Fail(
                RejectKind.TOO_MANY_ASKS,
                "asks",
                f"{len(asks)} asks, over the limit of {self.max_asks} per record "
                "(split the conversation into several records)",
            )
        paths = [found for index, ask in enumerate(asks) for found in _ask_paths(index, ask)]
        record = _to_record(obj)
        for field, path in paths:
            problem = self._check_path(path)
            if problem is not None:
                raise _Fail(problem.kind, field, problem.reason)
        return Accepted(record, data)

    def remember(self, line: RawLine) -> None:
        """Note the id of a line that is not checked again (a resumed run skips it), so a
        later line repeating that id is still refused as a duplicate."""
        if line.data is None:
            return
        try:
            obj = pydantic_core.from_json(line.data, allow_inf_nan=False)
        except (ValueError, RecursionError):
            return
        record_id = obj.get("id") if isinstance(obj, dict) else None
        if isinstance(record_id, str) and record_id.strip():
            self._seen.setdefault(record_id, line.number)

    def _check_id(self, number: int, obj: dict[str, Any]) -> None:
        if "id" not in obj:
            raise _Fail(RejectKind.BAD_ID, "id", "missing id")
        record_id = obj["id"]
        if not isinstance(record_id, str):
            raise _Fail(RejectKind.BAD_ID, "id", f"id must be a string, got {json_type(record_id)}")
        if not record_id.strip():
            raise _Fail(RejectKind.BAD_ID, "id", "empty id")
        if LINE_ID.fullmatch(record_id):
            raise _Fail(
                RejectKind.BAD_ID,
                "id",
                f"id {record_id!r} is reserved: `line:N` names input lines without a usable id",
            )
        first = self._seen.setdefault(record_id, number)
        if first != number:
            raise _Fail(
                RejectKind.DUPLICATE_ID,
                "id",
                f"duplicate id {record_id!r} (first on line {first})",
            )

    def _check_path(self, path: str) -> Problem | None:
        """Stat a referenced file once per distinct path (the same image is often reused)."""
        if path in self._path_cache:
            return self._path_cache[path]
        resolved = Path(path) if os.path.isabs(path) else self.base_dir / path
        problem: Problem | None = None
        try:
            st = self._stat(str(resolved))
        except FileNotFoundError:
            problem = Problem(RejectKind.MISSING_FILE, None, f"file not found: {resolved}")
        except OSError as exc:
            problem = Problem(
                RejectKind.MISSING_FILE, None, f"cannot stat {resolved}: {exc.strerror}"
            )
        else:
            if not stat_mod.S_ISREG(st.st_mode):
                problem = Problem(RejectKind.MISSING_FILE, None, f"not a regular file: {resolved}")
            elif st.st_size > self.max_file_bytes:
                problem = Problem(
                    RejectKind.FILE_TOO_LARGE,
                    None,
                    f"{resolved} is {st.st_size} bytes, over the {self.max_file_bytes}-byte limit",
                )
        if len(self._path_cache) < 100_000:
            self._path_cache[path] = problem
        return problem


class _Fail(Exception):
    def __init__(self, kind: RejectKind, field: str | None, reason: str) -> None:
        super().__init__(reason)
        self.problem = Problem(kind, field, reason)
        self.obj: Any = None
        """The decoded line, once it is known to be an object."""


def _explain(data: bytes, exc: Exception) -> str:
    """The clearest reason a line is not JSON we can carry (only on the failure path)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"not UTF-8 text: {err}"
    try:
        json.loads(data, parse_constant=_no_constant)
    except (ValueError, RecursionError) as err:
        return f"invalid JSON: {err}"
    return f"invalid JSON: {exc}"  # valid to Python's parser, not to the consumers'


def _no_constant(name: str) -> Any:
    """JSON has no NaN/Infinity; Python's parser would accept them, other readers would not."""
    raise ValueError(f"{name} is not valid JSON")


def _usable_id(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip()) and not LINE_ID.fullmatch(value)


def _non_finite(value: Any, where: str = "") -> str | None:
    """The field holding an infinite number (a JSON number too big for a float), or None."""
    if isinstance(value, float):
        return where or "(line)" if value in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        items: Any = ((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{where}[{n}]", v) for n, v in enumerate(value))
    else:
        return None
    for field, item in items:
        found = _non_finite(item, field)
        if found is not None:
            return found
    return None


def _check_asks(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if "asks" not in obj or obj["asks"] is None:
        raise _Fail(RejectKind.BAD_ASKS, "asks", "missing asks")
    asks = obj["asks"]
    if not isinstance(asks, list):
        raise _Fail(RejectKind.BAD_ASKS, "asks", f"asks must be an array, got {json_type(asks)}")
    if not asks:
        raise _Fail(RejectKind.BAD_ASKS, "asks", "asks is empty")
    for index, ask in enumerate(asks):
        where = f"asks[{index}]"
        if not isinstance(ask, dict):
            raise _Fail(RejectKind.BAD_ASK, where, f"ask must be an object, got {json_type(ask)}")
        ask_id = ask.get("id")
        if ask_id is None:
            raise _Fail(RejectKind.BAD_ASK, f"{where}.id", "missing ask id")
        if not isinstance(ask_id, str):
            got = json_type(ask_id)
            raise _Fail(RejectKind.BAD_ASK, f"{where}.id", f"ask id must be a string, got {got}")
        if not ask_id.strip():
            raise _Fail(RejectKind.BAD_ASK, f"{where}.id", "empty ask id")
        content = ask.get("content")
        if content is None:
            raise _Fail(RejectKind.BAD_ASK, f"{where}.content", "missing content")
        if not isinstance(content, str):
            raise _Fail(
                RejectKind.BAD_ASK,
                f"{where}.content",
                f"content must be a string, got {json_type(content)}",
            )
        if not content.strip():
            raise _Fail(RejectKind.BAD_ASK, f"{where}.content", "empty content")
    return asks


def _ask_paths(index: int, ask: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, path) of every image/file an ask references; bad shapes are rejected."""
    found: list[tuple[str, str]] = []
    for key in PATH_KEYS:
        value = ask.get(key)
        field = f"asks[{index}].{key}"
        if value is None:
            continue
        if isinstance(value, str):
            items = [(field, value)]
        elif isinstance(value, list):
            items = [(f"{field}[{n}]", item) for n, item in enumerate(value)]
        else:
            raise _Fail(
                RejectKind.BAD_ASK,
                field,
                f"{key} must be a path or an array of paths, got {json_type(value)}",
            )
        for where, item in items:
            if not isinstance(item, str) or not item.strip():
                raise _Fail(RejectKind.BAD_ASK, where, "path must be a non-empty string")
            found.append((where, item))
    return found


def _to_record(obj: dict[str, Any]) -> Record:
    try:
        return Record.model_validate(obj)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = _loc(err["loc"])
        raise _Fail(RejectKind.INVALID_RECORD, field or None, err["msg"]) from None


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def rejected_output(number: int, obj: Any, record_id: str | None, ierr: dict[str, Any]) -> Record:
    """The output record of a rejected line: the original object plus `iErr` where possible.

    Keys the Record model cannot hold (an invalid `asks`, `answers`) are reset
    to empty values so the result message still validates.
    """
    if isinstance(obj, dict) and record_id is not None:
        candidate = {**obj, "iErr": ierr}
        reset: dict[str, Any]
        for reset in ({}, {"asks": []}, {"asks": [], "answers": None}):
            try:
                return Record.model_validate({**candidate, **reset})
            except ValidationError:
                continue
        return Record.model_validate({"id": record_id, "asks": [], "answers": None, "iErr": ierr})
    return Record.model_validate(
        {"id": f"line:{number}", "asks": [], "answers": None, "iErr": ierr}
    )
