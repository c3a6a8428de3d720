"""Message contracts: the gpt4batch record format and every NSQ message body.

Records keep fields they do not know (``extra="allow"``) so an output line is
the input line plus ``answers``/``iErr``. NSQ bodies carry a schema version
``v`` and the ``batch`` id; a body of another version is rejected with a clear
error instead of being half-understood.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

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


class IErr(BaseModel):
    """Why a record failed: an upstream HTTP status or one of our own codes."""

    model_config = ConfigDict(extra="allow")

    code: int
    message: str


class SpecDownload(BaseModel):
    """Where a file the model produced came from and where it is stored locally."""

    origin: str
    local: str


class ChatResponse(BaseModel):
    """One upstream chat answer, kept whole; only the fields we act on are typed."""

    model_config = ConfigDict(extra="allow")

    message_id: str | None = None
    conversation_id: str | None = None
    created: int | float | None = None
    end_turn: bool | None = None
    contents: list[dict[str, Any]] | None = None
    downloads: list[str] | None = None
    spec_downloads: list[SpecDownload] | None = None


class Ask(BaseModel):
    """One turn of a conversation."""

    model_config = ConfigDict(extra="allow")

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


class Record(BaseModel):
    """One input/output line: a conversation and, once run, its answers."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: str
    asks: list[Ask]
    answers: list[ChatResponse] | None = None
    iErr: IErr | None = None  # noqa: N815 - the file format's spelling
    extra: Any = None

    def to_line(self) -> str:
        """The record as one JSON line, without fields the input did not have."""
        return self.model_dump_json(exclude_unset=True)


class _Body(BaseModel):
    """Common envelope of every NSQ message body."""

    model_config = ConfigDict(extra="ignore")

    kind: ClassVar[str] = "body"
    v: int = Field(default=SCHEMA_VERSION, description="Schema version of this body.")
    batch: str = Field(min_length=1, max_length=200, description="Batch id.")

    @field_validator("v")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise UnsupportedVersion(
                f"unsupported {cls.kind} schema version v={v}; this build reads v={SCHEMA_VERSION}"
            )
        return v


class AskOverrides(BaseModel):
    """Per-message settings that win over the caller's own configuration."""

    model_config = ConfigDict(extra="forbid")

    upstream: UpstreamKind | None = None
    model: str | None = None
    gizmo_id: str | None = None
    history_and_training_disabled: bool | None = None
    chat_url: str | None = None
    upload_url: str | None = None


class AskMessage(_Body):
    """One conversation to run (topic `…asks`)."""

    kind: ClassVar[str] = "AskMessage"
    seq: int = Field(ge=0, description="0-based position of the record in its batch input.")
    record: Record
    base_dir: str | None = Field(
        default=None,
        description="Absolute folder that relative image/file paths are resolved against.",
    )
    overrides: AskOverrides | None = None


class ResultMessage(_Body):
    """A finished record, successful or not (topic `…results`)."""

    kind: ClassVar[str] = "ResultMessage"
    seq: int = Field(ge=0)
    record: Record


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


class BatchManifest(_Body):
    """Announces a batch and how many records it holds (topic `…batches`)."""

    kind: ClassVar[str] = "BatchManifest"
    total: int = Field(ge=0)
    input: str | None = Field(default=None, description="Path of the input file, if any.")
    status: Literal["published", "complete"] = "published"


MESSAGE_MODELS: tuple[type[_Body], ...] = (
    AskMessage,
    ResultMessage,
    DownloadJob,
    DownloadResult,
    BatchManifest,
)
