"""Clients for the upstream GPT services, sharing one error model.

client = make_client(config, http, before_call=limiter.acquire)
state = ConversationState()
for ask in record.asks:
    answer, state = await client.run_ask(state, ask, base_dir=..., overrides=...)
"""

from __future__ import annotations

import httpx

from gpt4batch.common.upstreams.base import (
    Answer,
    BeforeCall,
    ConversationClient,
    ConversationState,
    FileOpener,
    TokenMeter,
)
from gpt4batch.common.upstreams.chatgpt_service import ChatgptServiceClient
from gpt4batch.common.upstreams.config import MAX_UPLOAD_BYTES, Sampling, UpstreamConfig
from gpt4batch.common.upstreams.gpt4api import Gpt4ApiClient
from gpt4batch.common.upstreams.openai import OpenAIClient

__all__ = [
    "MAX_UPLOAD_BYTES",
    "Answer",
    "BeforeCall",
    "ChatgptServiceClient",
    "ConversationClient",
    "ConversationState",
    "FileOpener",
    "Gpt4ApiClient",
    "OpenAIClient",
    "Sampling",
    "TokenMeter",
    "UpstreamConfig",
    "make_client",
]

_CLIENTS: dict[str, type[Gpt4ApiClient | OpenAIClient | ChatgptServiceClient]] = {
    "gpt4api": Gpt4ApiClient,
    "openai": OpenAIClient,
    "chatgpt-service": ChatgptServiceClient,
}


def make_client(
    config: UpstreamConfig,
    http: httpx.AsyncClient,
    *,
    before_call: BeforeCall | None = None,
    open_file: FileOpener | None = None,
    tokens: TokenMeter | None = None,
) -> Gpt4ApiClient | OpenAIClient | ChatgptServiceClient:
    """The client for `config.kind`, sharing the process's pooled `http` client; `open_file`
    opens the files asks upload (the caller's path policy), `tokens` meters model calls
    (the token limit, `--tpm`)."""
    return _CLIENTS[config.kind](
        config, http, before_call=before_call, open_file=open_file, tokens=tokens
    )
