"""The text of an upstream's answer, whatever its shape (answers are stored as sent).

- gpt4api.plus (all-tools, gizmos): ChatGPT-web messages in `contents`; the text is
  the string parts of the last assistant message (`contents[-1].message.content.parts`).
- OpenAI-compatible: `choices[0].message.content` (a string or text parts), or
  `choices[0].text` for `/v1/completions`.
- chatgpt-service: `data.response`.
"""

from __future__ import annotations

from typing import Any, cast


def answer_text(answer: Any) -> str:
    """The answer's text ("" when the shape holds none)."""
    if not isinstance(answer, dict):
        return ""
    choices = answer.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        choice = choices[0]
        message = choice.get("message")
        if isinstance(message, dict):
            return content_text(message.get("content")) or ""
        text = choice.get("text")
        return text if isinstance(text, str) else ""
    data = answer.get("data")
    if isinstance(data, dict) and isinstance(data.get("response"), str):
        return str(data["response"])
    return gpt4api_text(answer)


def gpt4api_text(answer: dict[str, Any]) -> str:
    """The string parts of the last assistant message in `contents`, one per line."""
    texts: list[str] = []
    for entry in answer.get("contents") or []:
        message = entry.get("message") if isinstance(entry, dict) else None
        if not isinstance(message, dict):
            continue
        role = (message.get("author") or {}).get("role")
        parts = (message.get("content") or {}).get("parts") or []
        if role == "assistant":
            texts = [p for p in parts if isinstance(p, str)] or texts
    return "\n".join(texts)


def content_text(content: Any) -> str | None:
    """An OpenAI message `content`: a string, or a list of text parts (else None)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if len(texts) == len(content) and all(isinstance(t, str) for t in texts):
            return "\n".join(cast("list[str]", texts))
    return None
