"""The shared base of the message models: the schema version, the round-trip record base,
and the envelope of every NSQ body (its version checked on arrival)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

SCHEMA_VERSION = 1


class UnsupportedVersion(ValueError):
    """A message body declares a schema version this build does not speak."""


class RoundTrip(BaseModel):
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


class Body(BaseModel):
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
