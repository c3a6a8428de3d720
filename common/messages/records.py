"""The gpt4batch record format: one input/output line, its asks, answers and iErr.

Records keep fields they do not know (``extra="allow"``) so an output line is
the input line plus ``answers``/``iErr``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field

from gpt4batch.common.messages.base import RoundTrip


def _as_list(value: Any) -> Any:
    """Accept a single path where a list of paths is expected (the seed's ``image``)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return value


PathList = Annotated[list[str], BeforeValidator(_as_list)]


class IErr(RoundTrip):
    """Why a record failed: an upstream HTTP status or one of our own codes."""

    code: int
    message: str


class SpecDownload(BaseModel):
    """Where a file the model produced came from and where it is stored locally."""

    origin: str
    local: str


class ChatResponse(RoundTrip):
    """One upstream chat answer, kept whole; only the fields we act on are typed."""

    message_id: str | None = None
    conversation_id: str | None = None
    created: int | float | None = None
    end_turn: bool | None = None
    contents: list[dict[str, Any]] | None = None
    downloads: list[str] | None = None
    spec_downloads: list[SpecDownload] | None = None


class Ask(RoundTrip):
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


class Record(RoundTrip):
    """One input/output line: a conversation and, once run, its answers."""

    id: str
    asks: list[Ask]
    answers: list[ChatResponse] | None = None
    iErr: IErr | None = None  # the file format spells it so
    extra: Any = None

    def to_line(self) -> str:
        """The record as one JSON line, without fields the input did not have."""
        return self.model_dump_json()
