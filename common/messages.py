"""Message contracts: the gpt4batch record format and every NSQ message body.

Records keep fields they do not know (``extra="allow"``) so an output line is
the input line plus ``answers``/``iErr``. NSQ bodies carry a schema version
``v`` and the ``batch`` id; a body of another version is rejected with a clear
error instead of being half-understood.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Self

import pydantic_core
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

from gpt4batch.common.errors import IErrCode

SCHEMA_VERSION = 1

UpstreamKind = Literal["gpt4api", "openai", "chatgpt-service"]


class UnsupportedVersion(ValueError):
    """A message body declares a schema version this build does not speak."""


def _as_list(value: Any) -> Any:
    """Accept a single path where a list of paths is expected (the seed's ``image``)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return value


PathList = Annotated[list[str], BeforeValidator(_as_list)]


class _RoundTrip(BaseModel):
    """Serialises only the fields that were given or set, plus unknown ones.

    This keeps an output line equal to its input line apart from what we add,
    whatever message the record travels inside.
    """

    model_config = ConfigDict(extra="allow")

    @model_serializer(mode="wrap")
    def _given_fields_only(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name in type(self).model_fields:
                if name not in self.model_fields_set:
                    data.pop(name, None)
        return data


class IErr(_RoundTrip):
    """Why a record failed: an upstream HTTP status or one of our own codes."""

    code: int
    message: str


class SpecDownload(BaseModel):
    """Where a file the model produced came from and where it is stored locally."""

    origin: str
    local: str


class ChatResponse(_RoundTrip):
    """One upstream chat answer, kept whole; only the fields we act on are typed."""

    message_id: str | None = None
    conversation_id: str | None = None
    created: int | float | None = None
    end_turn: bool | None = None
    contents: list[dict[str, Any]] | None = None
    downloads: list[str] | None = None
    spec_downloads: list[SpecDownload] | None = None


class Ask(_RoundTrip):
    """One turn of a conversation."""

    id: str
    content: str
    images: PathList = Field(default_factory=list)
    image: PathList | None = Field(
        default=None, description="Alias of `images` used by the original README."
    )
    files: PathList = Field(default_factory=list)

    def image_paths(self) -> list[str]:
        """Images to upload: `images` plus the README's `image` spelling."""
        return [*self.images, *(self.image or [])]


class Record(_RoundTrip):
    """One input/output line: a conversation and, once run, its answers."""

    id: str
    asks: list[Ask]
    answers: list[ChatResponse] | None = None
    iErr: IErr | None = None  # the file format spells it so
    extra: Any = None

    def to_line(self) -> str:
        """The record as one JSON line, without fields the input did not have."""
        return self.model_dump_json()


class _Body(BaseModel):
    """Common envelope of every NSQ message body."""

    model_config = ConfigDict(extra="ignore")

    kind: ClassVar[str] = "body"
    v: int = Field(
        default=SCHEMA_VERSION,
        description="Schema version of this body.",
        json_schema_extra={"const": SCHEMA_VERSION},
    )
    batch: str = Field(min_length=1, max_length=200, description="Batch id.")

    @field_validator("v")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise UnsupportedVersion(
                f"unsupported {cls.kind} schema version v={v}; this build reads v={SCHEMA_VERSION}"
            )
        return v


class _KeepsReceivedRecord(_Body):
    """A body that carries a `record` and keeps it as received.

    Validated from bytes, the body is parsed once and the model validated from that
    parse; the parsed record object is kept, so the record can be passed on or written
    out as sent (unknown fields, key order, values) without a model round trip. A body
    that is not a JSON object gets the JSON validator's own error. Equality ignores what
    is kept: equal data, equal messages, received or built in code.
    """

    _received: tuple[Any, Record] | None = PrivateAttr(default=None)

    if TYPE_CHECKING:
        record: Record

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **kwargs: Any) -> Self:
        if kwargs or not isinstance(json_data, bytes):
            return super().model_validate_json(json_data, **kwargs)
        try:
            data = pydantic_core.from_json(json_data)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return super().model_validate_json(json_data)
        message = cls.model_validate(data)
        message._received = (data["record"], message.record)
        return message

    def received_record(self) -> Any | None:
        """The record object as parsed from the body received (None: built in code, or
        `record` replaced since, e.g. by `model_copy(update=…)`)."""
        received = self.__pydantic_private__["_received"]  # type: ignore[index]  # (not pydantic's slow getattr)
        if received is not None and received[1] is self.record:
            return received[0]
        return None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _KeepsReceivedRecord):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__


class AskOverrides(BaseModel):
    """Per-message settings that win over the caller's own configuration.

    No URLs: whoever can publish to the asks topic must not be able to send
    the caller's access token to a host of their choosing.
    """

    model_config = ConfigDict(extra="forbid")

    upstream: UpstreamKind | None = None
    model: str | None = None
    gizmo_id: str | None = None
    history_and_training_disabled: bool | None = None
    # Sampling (OpenAI-style upstreams), e.g. from a Batch API request body.
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)


BatchEndpoint = Literal[
    "/v1/responses", "/v1/chat/completions", "/v1/completions", "/v1/embeddings"
]


class EndpointRequest(BaseModel):
    """A Batch API request line's `url` and `body`, to be sent as it is (common/endpoints.py).

    The body is kept whole (every field: tools, response_format, n, seed, input, …);
    an OpenAI-style upstream gets it at the same path, a chat-only one as an ask.
    """

    model_config = ConfigDict(extra="forbid")

    endpoint: BatchEndpoint
    body: dict[str, Any]


class AskMessage(_KeepsReceivedRecord):
    """One conversation to run (topic `…asks`).

    No BatchManifest is required: the sink appends each answer to its batch's
    output as it arrives. A BatchManifest giving the batch's total lets the sink
    complete the batch (output rewritten in input order, `.done`); a sink holds
    a bounded number of batches without one (docs/deployment.md).
    """

    kind: ClassVar[str] = "AskMessage"
    seq: int = Field(ge=0, description="0-based position of the record in its batch input.")
    record: Record
    base_dir: str | None = Field(
        default=None,
        description="Absolute folder that relative image/file paths are resolved against.",
    )
    overrides: AskOverrides | None = None
    history: list[dict[str, Any]] | None = Field(
        default=None,
        description="OpenAI-style chat messages before the first ask (system prompt, earlier "
        "turns), e.g. from a Batch API line; sent as they are by the openai upstream.",
    )
    request: EndpointRequest | None = Field(
        default=None,
        description="A Batch API line's endpoint and body, sent as they are (the record then "
        "holds only its custom_id and one empty ask); checked once, by the gateway.",
    )
    republished: bool = Field(
        default=False,
        description="Published again by an ingest re-run: the killed run had sent it "
        "without nsqd's acknowledgement, so nsqd may hold it twice. A caller that answered "
        "this (batch, seq) finishes it without a call.",
    )

    def record_object(self) -> dict[str, Any]:
        """The record as a JSON object: as received in the message body (its unknown fields,
        key order and values as sent; validated once, on arrival), else serialised from the
        model (a message built in code). A received message is not to be changed in place.
        """
        received = self.received_record()
        if isinstance(received, dict):
            return received
        return self.record.model_dump(mode="json")


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


class ResultMessage(_KeepsReceivedRecord):
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


class DownloadJob(_Body):
    """A file the model produced, to fetch into the download folder (topic `…downloads`)."""

    kind: ClassVar[str] = "DownloadJob"
    record_id: str
    ask_id: str
    url: str
    local: str = Field(description="File name inside the download folder (no path).")


class DownloadResult(_Body):
    """What became of a DownloadJob (topic `…downloaded`)."""

    kind: ClassVar[str] = "DownloadResult"
    record_id: str
    ask_id: str
    url: str
    local: str
    ok: bool
    size: int | None = None
    sha256: str | None = None
    error: str | None = None


class Finishers:
    """Values of `BatchManifest.finisher`: who writes a batch's output."""

    FILE_SINK = "sink"  # `gpt4batch sink` (the default)
    GATEWAY = "gateway"  # the Batch API gateway, from its own ledger
    RUN = "run"  # `gpt4batch run`, beside its input


class BatchManifest(_Body):
    """Announces a batch and how many records it holds (topic `…batches`).

    Optional for a stream of asks; with it the sink completes the batch once
    every seq below `total` has a line. `finisher` says who writes the batch: a file
    sink leaves a batch another owner finishes (the gateway, `run`) alone, but only
    when the manifest is signed by our services (the topic is open).
    """

    kind: ClassVar[str] = "BatchManifest"
    total: int = Field(ge=0)
    input: str | None = Field(
        default=None, description="Final location of the input file, if any (after any move)."
    )
    input_sha256: str | None = Field(default=None, description="sha256 of the input's bytes.")
    input_size: int | None = Field(default=None, ge=0, description="Size of the input in bytes.")
    status: Literal["published", "complete"] = "published"
    usage: UsageLine | None = Field(
        default=None,
        description="With status complete: the tokens and cost of the batch's calls, summed "
        "(`records`: how many results carried a usage).",
    )
    finisher: str = Field(
        default=Finishers.FILE_SINK,
        min_length=1,
        max_length=64,
        description="Who writes the batch's output: 'sink' (the file sink, the default "
        "for other producers and older messages), 'gateway' or 'run'. A file sink honours "
        "another name only on a manifest signed with the services' secret.",
    )


StopReason = Literal["cancelled", "expired"]


class BatchStopped(_Body):
    """The gateway stopped a batch (topic `…stopped#ephemeral`; authenticated, so only our
    services can stop a batch): callers finish its asks without calling the upstream,
    each as a failed result (iErr 585 `batch_cancelled` / 586 `batch_expired`).

    Every caller hears it on a channel of its own. The gateway announces it again every
    few seconds while the batch still has asks without a result, so a caller that starts
    later (or missed one) learns it too.
    """

    kind: ClassVar[str] = "BatchStopped"
    reason: StopReason = Field(description="Why: the user cancelled it, or its window passed.")


_STOPPED_ERRORS: dict[str, IErr] = {
    "cancelled": IErr(
        code=int(IErrCode.BATCH_CANCELLED),
        message="This request was not executed: the batch was cancelled before it ran.",
    ),
    "expired": IErr(
        code=int(IErrCode.BATCH_EXPIRED),
        message="This request could not be executed before the completion window expired.",
    ),
}
#: iErr codes of records not run because their batch stopped.
STOPPED_CODES = frozenset(err.code for err in _STOPPED_ERRORS.values())


def stopped_error(reason: StopReason) -> IErr:
    """The iErr of a record not run because its batch stopped for `reason`."""
    return _STOPPED_ERRORS[reason]


class DeadLetter(BaseModel):
    """A message that can never be handled, with why (topic `…dead`)."""

    model_config = ConfigDict(extra="allow")

    v: int = SCHEMA_VERSION
    topic: str
    channel: str
    service: str
    id: str
    attempts: int
    reason: str
    at: float = Field(description="Unix time it was dead-lettered.")
    body: str | None = Field(
        description="The original body (its first bytes if `body_truncated`), when UTF-8 text."
    )
    body_b64: str | None = Field(default=None, description="The original body otherwise.")
    body_size: int | None = Field(default=None, description="Size of the whole original body.")
    body_sha256: str | None = Field(default=None, description="sha256 of the whole body (hex).")
    body_truncated: bool = Field(
        default=False, description="Only the body's first bytes are kept, so the letter fits."
    )
    unauthenticated: bool = Field(
        default=False,
        description="The message was refused for want of a valid authenticator (a forgery, "
        "or a publisher with another secret): its letter never turns a record into a failed "
        "line.",
    )


class ResultPart(_Body):
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


class FeedMessage(BaseModel):
    """The original `batchsvc -n` feed on topic `gpt4api`: one per answered ask.

    Published for systems built on the original; nothing of ours consumes it.
    """

    ask: str = Field(description="The ask's message text.")
    answer: dict[str, Any] = Field(description="The whole chat answer, as the upstream sent it.")
    dir: str = Field(description="The download folder of the produced files.")


MESSAGE_MODELS: tuple[type[BaseModel], ...] = (
    AskMessage,
    ResultMessage,
    ResultPart,
    DownloadJob,
    DownloadResult,
    BatchManifest,
    BatchStopped,
    DeadLetter,
    FeedMessage,
)
