"""Upload bodies parsed as they arrive, in any chunking, without NSQ."""

from __future__ import annotations

import random
from pathlib import Path

import httpx
import pytest

from gpt4batch.services.gateway.bodies import (
    BadBody,
    LineCounter,
    MultipartUpload,
    SmallBody,
    multipart_boundary,
)
from gpt4batch.services.gateway.settings import MAX_REQUESTS


def encoded(files: dict[str, tuple[str, bytes]], data: dict[str, str]) -> tuple[str, bytes]:
    """The body the openai SDK (httpx) sends for an upload."""
    request = httpx.Request("POST", "http://x/v1/files", files=files, data=data)
    return request.headers["Content-Type"], request.read()


def parse(content_type: str, body: bytes, path: Path, seed: int) -> MultipartUpload:
    upload = MultipartUpload(multipart_boundary(content_type), path, MAX_REQUESTS)
    rng = random.Random(seed)
    at = 0
    while at < len(body):
        size = rng.choice([1, 2, 7, 70, 4096, 65536])
        upload.feed(body[at : at + size])
        at += size
    upload.finish()
    upload.close()
    return upload


@pytest.mark.parametrize("seed", range(8))
def test_the_file_goes_to_disk_and_the_fields_are_kept_in_any_chunking(
    tmp_path: Path, seed: int
) -> None:
    data = bytes(random.Random(seed).randbytes(200_000)) + b"\r\n--not-the-boundary\r\n"
    content_type, body = encoded({"file": ("../../in put.jsonl", data)}, {"purpose": "batch"})
    target = tmp_path / "spool"

    upload = parse(content_type, body, target, seed)

    assert target.read_bytes() == data and upload.file_bytes == len(data)
    assert upload.fields == {"purpose": "batch"}
    assert upload.filename == "in put.jsonl"


def test_a_cut_body_an_oversized_field_and_a_wrong_type_are_refused(tmp_path: Path) -> None:
    content_type, body = encoded({"file": ("a.jsonl", b"x" * 1000)}, {"purpose": "batch"})
    upload = MultipartUpload(multipart_boundary(content_type), tmp_path / "s", MAX_REQUESTS)
    upload.feed(body[:-10])
    with pytest.raises(BadBody, match="closing boundary"):
        upload.finish()
    content_type, body = encoded({"file": ("a.jsonl", b"x")}, {"purpose": "b" * 5000})
    with pytest.raises(BadBody, match="over 1024 bytes"):
        MultipartUpload(multipart_boundary(content_type), tmp_path / "t", MAX_REQUESTS).feed(body)
    with pytest.raises(BadBody, match="multipart/form-data"):
        multipart_boundary("application/json")


def test_a_small_body_has_a_limit() -> None:
    body = SmallBody(10)
    body.feed(b"12345")
    body.feed(b"67890")
    assert body.data() == b"1234567890"
    with pytest.raises(BadBody, match="10-byte limit"):
        body.feed(b"!")


@pytest.mark.parametrize("seed", range(6))
def test_the_upload_counts_non_blank_lines_in_any_chunking(seed: int) -> None:
    data = b'{"a":1}\n\n  \t\r\n{"b":2}\r\n' + b'{"c":3}\n' * 5 + b"   \n" + b'{"last":0}'
    rng = random.Random(seed)
    counter = LineCounter(limit=8)
    at = 0
    while at < len(data):
        size = rng.choice([1, 2, 3, 9, 64])
        counter.feed(data[at : at + size])
        at += size
    assert (counter.lines, counter.over) == (7, False)  # and the unended last: 8 of 8
    counter.feed(b"\n \n")
    assert (counter.lines, counter.over) == (8, False)
    counter.feed(b"x")
    assert counter.over is True  # 9 of at most 8


def test_the_count_stops_past_the_limit() -> None:
    counter = LineCounter(limit=2)
    counter.feed(b"a\nb\nc\n")
    assert counter.over and counter.lines == 3
    counter.feed(b"d\n" * 1000)  # not looked at
    assert counter.lines == 3
