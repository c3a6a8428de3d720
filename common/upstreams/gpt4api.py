"""gpt4api.plus: multipart uploads, then `all-tools` or `gizmos` chat (seed 001)."""

from __future__ import annotations

import mimetypes
import os
from dataclasses import replace
from typing import Any, Literal

from gpt4batch.common.messages import Ask, AskOverrides
from gpt4batch.common.upstreams import errors
from gpt4batch.common.upstreams.base import (
    Answer,
    ConversationState,
    HttpBase,
    resolve,
)
from gpt4batch.common.upstreams.config import UpstreamConfig

UploadType = Literal["multimodal", "my_files"]


def _endpoint(config: UpstreamConfig, name: str) -> str:
    """An endpoint nobody gave a URL for: beside `--chat-url` when only that was
    configured (same host, same tier), else under the base URL."""
    if config.chat_url and not config.base_url:
        return config.chat_url.rstrip("/").rsplit("/", 1)[0] + "/" + name
    return config.url(f"{config.tier}/{name}")


class Gpt4ApiClient(HttpBase):
    """Client of gpt4api.plus; tiers `standard`/`concurrent`, explicit URLs win."""

    kind = "gpt4api"

    def upload_url(self, config: UpstreamConfig) -> str:
        return config.upload_url or _endpoint(config, "uploaded")

    def chat_url(self, config: UpstreamConfig) -> str:
        if config.gizmo_id:
            return config.gizmo_url or _endpoint(config, "gizmos")
        return config.chat_url or _endpoint(config, "all-tools")

    async def upload(
        self,
        path: str,
        kind: UploadType,
        conversation_id: str | None,
        *,
        config: UpstreamConfig | None = None,
    ) -> dict[str, Any]:
        """Upload one file, streamed from disk; returns the upstream's JSON answer.

        Files over the limit are refused with FinalError(413) before any request.
        """
        config = config or self.config
        name = os.path.basename(path)
        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
        with self.open_file(path, config.max_upload_bytes) as fh:
            answer = await self.request_json(
                "upload",
                "POST",
                self.upload_url(config),
                config,
                upload=True,
                data={"conversation_id": conversation_id or "", "type": kind},
                files={"file": (name, fh, mime)},
            )
        key = "part" if kind == "multimodal" else "attachment"
        if not isinstance(answer, dict) or not isinstance(answer.get(key), dict):
            raise errors.bad_response("upload", f"answer has no {key}")
        return answer

    async def chat(
        self,
        message: str,
        state: ConversationState,
        *,
        parts: list[dict[str, Any]] | None = None,
        attachments: list[dict[str, Any]] | None = None,
        config: UpstreamConfig | None = None,
    ) -> Answer:
        """One chat call chained on `state`; returns the upstream JSON as is."""
        config = config or self.config
        body: dict[str, Any] = {
            "message": message,
            "model": config.model or ("gpt-4-gizmo" if config.gizmo_id else "gpt-4"),
            "history_and_training_disabled": config.history_and_training_disabled,
        }
        if config.gizmo_id:
            body["gizmo_id"] = config.gizmo_id
        if state.conversation_id:
            body["conversation_id"] = state.conversation_id
        if state.parent_message_id:
            body["parent_message_id"] = state.parent_message_id
        if parts:
            body["parts"] = parts
        if attachments:
            body["attachments"] = attachments
        answer = await self.request_json("chat", "POST", self.chat_url(config), config, json=body)
        if not isinstance(answer, dict) or not answer.get("message_id"):
            raise errors.bad_response("chat", "answer has no message_id")
        return answer

    async def run_ask(
        self,
        state: ConversationState,
        ask: Ask,
        *,
        base_dir: str | None = None,
        overrides: AskOverrides | None = None,
        uploaded: dict[str, Any] | None = None,
    ) -> tuple[Answer, ConversationState]:
        """Upload this ask's images (parts) and files (attachments), then chat."""
        config = self.config.with_overrides(overrides)
        conversation_id = state.conversation_id
        parts: list[dict[str, Any]] = []
        attachments: list[dict[str, Any]] = []
        done = {} if uploaded is None else uploaded
        wanted: list[tuple[UploadType, str]] = [
            *(("multimodal", p) for p in ask.image_paths()),
            *(("my_files", p) for p in ask.files),
        ]
        for n, (kind, path) in enumerate(wanted):
            key = f"{n}:{kind}:{path}"
            up = done.get(key)
            if up is None:
                up = await self.upload(
                    resolve(path, base_dir), kind, conversation_id, config=config
                )
                done[key] = up
            conversation_id = up.get("conversation_id") or conversation_id
            if kind == "multimodal":
                parts.append(up["part"])
            else:
                attachments.append(up["attachment"])
        chat_state = (
            state
            if conversation_id == state.conversation_id
            else replace(state, conversation_id=conversation_id)
        )
        answer = await self.chat(
            ask.content, chat_state, parts=parts, attachments=attachments, config=config
        )
        next_state = ConversationState(
            answer.get("conversation_id") or conversation_id,
            answer["message_id"],
            state.messages,
        )
        return answer, next_state
