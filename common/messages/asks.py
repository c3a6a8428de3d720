"""The asks: one conversation to run (topic `…asks`), with its per-message overrides and,
from the Batch API, the request line to send as it is."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from gpt4batch.common.messages.received import KeepsReceivedRecord
from gpt4batch.common.messages.records import Record

UpstreamKind = Literal["gpt4api", "openai", "chatgpt-service"]


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


class AskMessage(KeepsReceivedRecord):
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
