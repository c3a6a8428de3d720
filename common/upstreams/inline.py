"""An ask's images and text files inlined into an OpenAI-style user message."""

from __future__ import annotations

import base64
import mimetypes
import os
from typing import Any

from gpt4batch.common.errors import FinalError
from gpt4batch.common.messages import Ask
from gpt4batch.common.upstreams import errors
from gpt4batch.common.upstreams.base import FileOpener, open_local, resolve

#: Extensions read as text although `mimetypes` does not say text/*.
TEXT_EXTENSIONS = frozenset(
    {".txt", ".md", ".csv", ".tsv", ".json", ".jsonl", ".yaml", ".yml", ".xml", ".html",
     ".py", ".go", ".mod", ".js", ".ts", ".java", ".c", ".h", ".cpp", ".rs", ".sh", ".sql",
     ".toml", ".ini", ".log"}
)  # fmt: skip


def _read(path: str, limit: int, open_file: FileOpener) -> bytes:
    with open_file(path, limit) as fh:
        return fh.read()


def image_part(path: str, limit: int, open_file: FileOpener = open_local) -> dict[str, Any]:
    """An `image_url` content part holding the image as a base64 data URL."""
    mime = mimetypes.guess_type(path)[0] or "image/jpeg"
    if not mime.startswith("image/"):
        name = os.path.basename(path)
        raise FinalError(errors.UNSUPPORTED_FILE, f"{name} is not an image ({mime})")
    data = base64.b64encode(_read(path, limit, open_file)).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}


def text_part(path: str, limit: int, open_file: FileOpener = open_local) -> dict[str, Any]:
    """A text content part with the file's contents; non-text files are a FinalError."""
    name = os.path.basename(path)
    mime = mimetypes.guess_type(name)[0] or ""
    ext = os.path.splitext(name)[1].lower()
    if not (mime.startswith("text/") or ext in TEXT_EXTENSIONS):
        raise FinalError(
            errors.UNSUPPORTED_FILE, f"{name}: only text files can be sent to this upstream"
        )
    try:
        text = _read(path, limit, open_file).decode("utf-8")
    except UnicodeDecodeError:
        raise FinalError(errors.UNSUPPORTED_FILE, f"{name} is not UTF-8 text") from None
    return {"type": "text", "text": f"File {name}:\n{text}"}


def user_message(
    ask: Ask, base_dir: str | None, limit: int, open_file: FileOpener = open_local
) -> dict[str, Any]:
    """The ask as a user message: a plain string, or content parts when it has files."""
    images = [image_part(resolve(p, base_dir), limit, open_file) for p in ask.image_paths()]
    texts = [text_part(resolve(p, base_dir), limit, open_file) for p in ask.files]
    if not images and not texts:
        return {"role": "user", "content": ask.content}
    return {"role": "user", "content": [{"type": "text", "text": ask.content}, *texts, *images]}
