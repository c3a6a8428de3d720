"""The simulator itself: seed-001 contract, /stats, QPS limit, console, limits."""

from __future__ import annotations

import asyncio
import socket
import struct
import zlib
from typing import Any

import httpx
import pytest

from gpt4batch.common.errors import RetryableError
from gpt4batch.common.imagesize import image_size
from gpt4batch.common.messages import Ask
from gpt4batch.common.upstreams import ConversationState, Gpt4ApiClient
from gpt4batch.services.mock_upstream.options import parse

from ._helpers import DATA, MockUpstream, delta, gpt4api_config, run

# Key sets copied from the seed 001 examples.
CHAT_KEYS = {"created", "message_id", "conversation_id", "end_turn", "contents"}
CONTENT_KEYS = {"conversation_id", "error", "message"}
MESSAGE_KEYS = {
    "author", "content", "create_time", "end_turn", "id", "metadata",
    "recipient", "status", "update_time", "weight",
}  # fmt: skip
AUTHOR_KEYS = {"metadata", "name", "role"}
BODY_KEYS = {"content_type", "parts"}
ASSISTANT_METADATA_KEYS = {
    "citations", "finish_details", "gizmo_id", "is_complete", "message_type",
    "model_slug", "parent_id", "request_id", "timestamp_",
}  # fmt: skip
USER_METADATA_KEYS = {"attachments", "message_type", "request_id", "timestamp_"}
UPLOAD_KEYS = {"conversation_id", "attachment", "part"}
PART_KEYS = {"name", "asset_pointer", "size_bytes", "width", "height", "mimeType"}
ATTACHMENT_KEYS = {"id", "name", "size", "mimeType"}
COMPLETION_KEYS = {"id", "object", "created", "model", "usage", "choices"}


def post(mock: MockUpstream, path: str, **kw: Any) -> httpx.Response:
    return httpx.post(f"{mock.url}{path}", headers=mock.headers, timeout=10, **kw)


def test_chat_answer_carries_every_seed_key(mock: MockUpstream) -> None:
    with open(DATA / "example.txt", "rb") as fh:
        up = post(mock, "/standard/uploaded", data={"conversation_id": "", "type": "my_files"},
                  files={"file": ("go.mod", fh, "text/plain")}).json()  # fmt: skip
    assert set(up) == UPLOAD_KEYS and set(up["attachment"]) == ATTACHMENT_KEYS
    body = {"message": "描述下图片", "model": "gpt-4", "conversation_id": up["conversation_id"],
            "attachments": [up["attachment"]]}  # fmt: skip
    answer = post(mock, "/standard/all-tools", json=body).json()
    assert set(answer) >= CHAT_KEYS and answer["downloads"] == []
    for item in answer["contents"]:
        assert set(item) == CONTENT_KEYS
        message = item["message"]
        assert set(message) == MESSAGE_KEYS
        assert set(message["author"]) == AUTHOR_KEYS
        assert set(message["content"]) == BODY_KEYS
    user, assistant = (c["message"] for c in answer["contents"])
    assert set(user["metadata"]) == USER_METADATA_KEYS
    assert user["metadata"]["attachments"] == [up["attachment"]]
    assert set(assistant["metadata"]) == ASSISTANT_METADATA_KEYS
    assert assistant["id"] == answer["message_id"]
    assert set(assistant["metadata"]["finish_details"]) == {"stop_tokens", "type"}


def test_image_upload_part_keys(mock: MockUpstream) -> None:
    with open(DATA / "1.jpeg", "rb") as fh:
        up = post(mock, "/concurrent/uploaded", data={"type": "multimodal"},
                  files={"file": ("1.jpeg", fh, "image/jpeg")}).json()  # fmt: skip
    assert set(up["part"]) == PART_KEYS and up["attachment"] is None
    assert up["part"]["asset_pointer"].startswith("file-service://file-")


def test_openai_completion_keys(mock: MockUpstream) -> None:
    body = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}
    answer = post(mock, "/v1/chat/completions", json=body).json()
    assert set(answer) == COMPLETION_KEYS
    assert set(answer["usage"]) == {
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "prompt_tokens_details",
        "completion_tokens_details",
    }
    assert set(answer["choices"][0]) == {"message", "finish_reason", "index", "logprobs"}


def test_gizmos_needs_gizmo_id_and_message_is_required(mock: MockUpstream) -> None:
    assert post(mock, "/standard/gizmos", json={"message": "x"}).status_code == 400
    assert post(mock, "/standard/all-tools", json={"model": "gpt-4"}).status_code == 400
    assert post(mock, "/standard/all-tools", content=b"not json").status_code == 400


def test_missing_or_wrong_token_is_401_and_counted(mock: MockUpstream) -> None:
    before = mock.stats()
    assert httpx.get(f"{mock.url}/v1/models").status_code == 401
    bad = httpx.get(f"{mock.url}/v1/models", headers={"Authorization": "Bearer sk-other"})
    assert bad.status_code == 401
    bare = httpx.get(f"{mock.url}/v1/models", headers={"Authorization": mock.token})
    assert bare.status_code == 200  # seed 001 also shows the bare-token spelling
    assert delta(before, mock.stats(), "unauthorized") == 2


def test_console_access_token(mock: MockUpstream) -> None:
    login = {"email": "mock@example.com", "password": "mock-password", "ttl": 3600}
    ok = httpx.post(f"{mock.url}/console/access_token", json=login)
    assert ok.status_code == 200
    assert set(ok.json()) == {"access_token", "expired_at", "username"}
    assert ok.json()["access_token"] == mock.token
    login["password"] = "nope"
    wrong = httpx.post(f"{mock.url}/console/access_token", json=login)
    assert wrong.status_code == 401 and mock.token not in wrong.text


def test_files_need_a_signature(mock: MockUpstream) -> None:
    assert httpx.get(f"{mock.url}/files/file-abc").status_code == 403
    ok = httpx.get(f"{mock.url}/files/file-abc?sig=x")
    assert (
        ok.status_code == 200
        and ok.content == httpx.get(f"{mock.url}/files/file-abc?sig=y").content
    )


def test_oversize_upload_is_413_at_the_simulator(mock: MockUpstream) -> None:
    # Announce a body over the limit; the simulator answers before reading it.
    url = httpx.URL(mock.url)
    head = (
        "POST /standard/uploaded HTTP/1.1\r\n"
        f"Host: {url.host}:{url.port}\r\nAuthorization: Bearer {mock.token}\r\n"
        "Content-Type: multipart/form-data; boundary=x\r\n"
        f"Content-Length: {102 * 1024 * 1024}\r\n\r\n"
    )
    with socket.create_connection((url.host, url.port), timeout=10) as sock:
        sock.sendall(head.encode())
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large"


def test_stats_reset_and_fields() -> None:
    with MockUpstream() as m:
        post(m, "/v1/models")  # POST on a GET route: 405, still counted
        stats = m.stats()
        assert set(stats) >= {
            "calls", "total_calls", "in_flight", "max_in_flight", "max_calls_in_1s",
            "chain_errors", "unauthorized", "rate_limited", "not_found", "faults",
        }  # fmt: skip
        assert stats["calls"] == {"models": 1} and stats["in_flight"] == 0
        m.reset()
        assert m.stats()["total_calls"] == 0


def test_concurrency_and_window_are_measured_and_in_flight_returns_to_zero() -> None:
    with MockUpstream("--latency-ms", "200") as m:

        async def go(http: httpx.AsyncClient) -> None:
            client = Gpt4ApiClient(gpt4api_config(m), http)
            await asyncio.gather(
                *(client.run_ask(ConversationState(), Ask(id="a", content="x")) for _ in range(8))
            )

        run(go)
        stats = m.stats()
    assert stats["max_in_flight"] == 8
    assert stats["max_calls_in_1s"] == 8
    assert stats["in_flight"] == 0


def test_qps_limit_answers_429_with_retry_after() -> None:
    with MockUpstream("--qps", "3") as m:

        async def go(http: httpx.AsyncClient) -> list[Any]:
            client = Gpt4ApiClient(gpt4api_config(m), http)
            return await asyncio.gather(
                *(client.run_ask(ConversationState(), Ask(id="a", content="x")) for _ in range(8)),
                return_exceptions=True,
            )

        results = run(go)
        downloads = [httpx.get(f"{m.url}/files/file-x?sig=s").status_code for _ in range(4)]
        stats = m.stats()
    assert downloads == [200] * 4  # downloads are not API calls: no QPS limit
    limited = [r for r in results if isinstance(r, RetryableError)]
    assert len(limited) == 5
    assert all(r.status == 429 and r.retry_after == 1.0 for r in limited)
    assert stats["rate_limited"] == 5 and stats["max_calls_in_1s"] == 8


def test_seeded_fault_rate_is_reproducible() -> None:
    def statuses() -> list[int]:
        with MockUpstream("--seed", "3", "--fault-5xx", "0.5") as m:
            return [
                httpx.get(f"{m.url}/v1/models", headers=m.headers).status_code for _ in range(12)
            ]

    first = statuses()
    assert first == statuses()
    assert 503 in first and 200 in first


def test_image_size_png_jpeg_and_unknown() -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 640, 480, 8, 2, 0, 0, 0))
    assert image_size(png) == (640, 480)
    assert image_size((DATA / "1.jpeg").read_bytes()) == (1200, 800)
    assert image_size(b"GIF89a") == (1024, 1024)


def test_options_parse_all_flags() -> None:
    options = parse(["--port", "0", "--qps", "5", "--fault-bad-json", "0.1", "--seed", "9",
                     "--lognormal-median-ms", "50", "--lognormal-sigma", "0.5", "--hostile-names",
                     "--no-fault-header"])  # fmt: skip
    assert options.port == 0 and options.qps == 5 and options.seed == 9
    assert options.fault_rates()["bad-json"] == 0.1
    assert options.hostile_names and not options.fault_header


@pytest.mark.parametrize("flag", ["--hostile-names"])
def test_hostile_names_flag_makes_every_download_hostile(flag: str) -> None:
    with MockUpstream(flag) as m:
        answer = post(m, "/standard/all-tools", json={"message": "draw a cat"}).json()
    assert "filename%3D..%2F..%2Fetc%2Fpasswd" in answer["downloads"][0]


def test_embedded_serve_runs_in_process_and_latency_is_seeded() -> None:
    # Given the app served on this process's loop, with log-normal latency
    from gpt4batch.services.mock_upstream.app import serve
    from gpt4batch.services.mock_upstream.options import Options
    from gpt4batch.services.mock_upstream.state import SimState

    options = Options(port=0, seed=5, lognormal_median_ms=20, lognormal_sigma=0.3)
    delays = [SimState(options).delay() for _ in range(2)]
    assert delays[0] == delays[1] and 0.005 < delays[0] < 0.08

    async def go() -> tuple[int, dict[str, Any]]:
        server, port = await serve(options)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                headers = {"Authorization": "Bearer sk-mock"}
                status = (await http.get("/v1/models", headers=headers)).status_code
                return status, (await http.get("/stats")).json()
        finally:
            server.stop()

    status, stats = asyncio.run(go())
    assert status == 200 and stats["calls"] == {"models": 1}
