"""A body that carries a `record` and keeps it as received (asks and results)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

import pydantic_core
from pydantic import PrivateAttr

from gpt4batch.common.messages.base import Body
from gpt4batch.common.messages.records import Record


class KeepsReceivedRecord(Body):
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
        if not isinstance(other, KeepsReceivedRecord):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__
