"""The results: a finished record (topic `…results`), its usage, ingest's rejects, and the
pieces of a result too large for one NSQ message (topic `…results.parts`)."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field

from gpt4batch.common.errors import IErrCode
from gpt4batch.common.messages.base import SCHEMA_VERSION, Body
from gpt4batch.common.messages.received import KeepsReceivedRecord
from gpt4batch.common.messages.records import Record

#: iErr code of an input line ingest refused.
REJECT_CODE = int(IErrCode.REJECTED)
_REJECTED_LINE = re.compile(r"^rejected by ingest: line (\d+)\b")


def reject_message(line: int, field: str | None, reason: str) -> str:
    """The iErr message of a refused line; `rejected_line` reads the line number back."""
    where = f"line {line}" + (f", field {field}" if field else "")
    return f"rejected by ingest: {where}: {reason}"


def rejected_line(ierr: Any) -> int | None:
    """The input line number of an output record ingest refused (from its iErr), else None.

    The sink rebuilds its duplicate keys from the output file with this: the
    output line itself says it is the refused line N, whatever its id.
    """
    if not isinstance(ierr, dict) or ierr.get("code") != REJECT_CODE:
        return None
    match = _REJECTED_LINE.match(str(ierr.get("message", "")))
    return int(match.group(1)) if match else None


class Reject(BaseModel):
    """Why ingest refused an input line (one row of `<out>.rejects.jsonl`)."""

    line: int = Field(ge=1, description="1-based line number in the input.")
    id: str | None = Field(default=None, description="The record id, if it could be read.")
    field: str | None = Field(default=None, description="The offending field, e.g. asks[0].content")
    reason: str
    source: str | None = Field(default=None, description="The input file.")


class UsageLine(BaseModel):
    """Tokens and cost of a record's answered calls (its output line's `usage`), or their
    sum over a batch (docs/limits.md). Where the upstream reported them, `cached_tokens`
    (of the prompt) and `reasoning_tokens` (of the completion) come along as extra
    fields (common/usage.py)."""

    model_config = ConfigDict(extra="allow")

    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    total_tokens: int = Field(ge=0)
    estimated: bool = Field(
        description="Some tokens are estimated: the upstream reported none (gpt4api.plus)."
    )
    cost_usd: float = Field(
        ge=0, allow_inf_nan=False, description="At the caller's prices (0 without prices)."
    )


class ResultMessage(KeepsReceivedRecord):
    """A finished record, successful or not (topic `…results`)."""

    kind: ClassVar[str] = "ResultMessage"
    seq: int = Field(ge=0)
    record: Record
    reject: Reject | None = Field(
        default=None, description="Set when ingest refused the line; the sink logs it to rejects."
    )
    planned_downloads: list[str] = Field(
        default_factory=list,
        description="Local names of the files this record's answers will be downloaded to; "
        "the batch is complete only once each has a DownloadResult.",
    )
    usage: UsageLine | None = Field(
        default=None,
        description="What this result's calls used and cost, set by the caller that made them "
        "(None: no call was made for it, e.g. a record `--fix` passed through); the sink "
        "sums it into the batch's totals.",
    )

    def record_json(self) -> bytes:
        """The record as one output line: the record object as received in the message
        body (validated once, on arrival), not re-serialised through the models.

        A record replaced since (`model_copy(update=…)`, deep copies) is serialised
        again; a received record is not to be changed in place.
        """
        received = self.received_record()
        if received is not None:
            return pydantic_core.to_json(received)
        return self.record.to_line().encode()


def result_json(
    batch: str,
    seq: int,
    record: dict[str, Any],
    planned_downloads: list[str],
    usage: dict[str, Any] | None = None,
) -> bytes:
    """The body of `ResultMessage(batch, seq, record, planned_downloads, usage)` (no
    `reject`) built from a record already in JSON form, without the models' round trip:
    the same fields in the same order as `ResultMessage.model_dump_json()`."""
    return pydantic_core.to_json(
        {
            "v": SCHEMA_VERSION,
            "batch": batch,
            "seq": seq,
            "record": record,
            "reject": None,
            "planned_downloads": planned_downloads,
            "usage": usage,
        }
    )


class ResultPart(Body):
    """One piece of a ResultMessage too large for one NSQ message (topic `…results.parts`).

    The pieces of one result share `group`; joined in `index` order their data
    is the ResultMessage's JSON, whose sha256 is `sha256`. The sink (and `run -n`)
    hold every piece unfinished until all have arrived, so a crash loses none.
    """

    kind: ClassVar[str] = "ResultPart"
    seq: int = Field(ge=0)
    record_id: str
    group: str = Field(min_length=1, max_length=64, description="Same for every piece.")
    index: int = Field(ge=0)
    count: int = Field(ge=2, le=1000)
    sha256: str = Field(description="sha256 (hex) of the whole ResultMessage JSON.")
    data: str = Field(description="This piece of the ResultMessage JSON, base64.")
