"""gpt4api client against the simulator subprocess: uploads, chat, chaining, faults."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest

from gpt4batch.common.errors import FinalError, RetryableError
from gpt4batch.common.messages import Ask, AskOverrides, ChatResponse
from gpt4batch.common.upstreams import ConversationState, Gpt4ApiClient, UpstreamConfig
from gpt4batch.common.upstreams.base import LocalFile, open_local

from ._helpers import MockUpstream, delta, fault, gpt4api_config, run


def ask(n: int, content: str = "describe", **kw: Any) -> Ask:
    return Ask(id=f"ask-{n}", content=content, **kw)


def test_three_asks_chain_with_uploads_of_both_types(mock: MockUpstream, data_dir: str) -> None:
    # Given a conversation whose asks carry an image, a file, and nothing
    asks = [
        ask(1, "describe the picture", images=["1.jpeg"]),
        ask(2, "summarise the file", files=["example.txt"]),
        ask(3, "now in English"),
    ]
    before = mock.stats()
    calls: list[str] = []

    async def limiter(endpoint: str) -> None:
        calls.append(endpoint)

    # When they run in order, each with the previous state
    async def go(http: httpx.AsyncClient) -> list[tuple[dict[str, Any], ConversationState]]:
        client = Gpt4ApiClient(gpt4api_config(mock), http, before_call=limiter)
        state, out = ConversationState(), []
        for a in asks:
            answer, state = await client.run_ask(state, a, base_dir=data_dir)
            out.append((answer, state))
        return out

    results = run(go)
    after = mock.stats()

    # Then every HTTP call went through the hook, the chain held, and ids chained
    assert calls == ["upload", "chat", "upload", "chat", "chat"]
    assert delta(before, after, "chain_errors") == 0
    assert delta(before, after, "calls", "uploaded") == 2
    assert delta(before, after, "calls", "all-tools") == 3
    conv_ids = {answer["conversation_id"] for answer, _ in results}
    assert len(conv_ids) == 1 and not next(iter(conv_ids)).startswith("internal-")
    for answer, state in results:
        assert ChatResponse.model_validate(answer).message_id == answer["message_id"]
        assert state.parent_message_id == answer["message_id"]
        assert state.conversation_id == answer["conversation_id"]
    first_text = results[0][0]["contents"][-1]["message"]["content"]["parts"][0]
    assert "parts=1" in first_text
    assert "attachments=1" in results[1][0]["contents"][-1]["message"]["content"]["parts"][0]


def test_upload_returns_part_with_real_image_size_and_attachment(
    mock: MockUpstream, data_dir: str
) -> None:
    async def go(http: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, Any]]:
        client = Gpt4ApiClient(gpt4api_config(mock), http)
        image = await client.upload(f"{data_dir}/1.jpeg", "multimodal", None)
        text = await client.upload(f"{data_dir}/example.txt", "my_files", image["conversation_id"])
        return image, text

    image, text = run(go)
    assert image["conversation_id"].startswith("internal-")
    assert image["attachment"] is None
    assert (image["part"]["width"], image["part"]["height"]) == (1200, 800)
    assert image["part"]["size_bytes"] == (Path(data_dir) / "1.jpeg").stat().st_size
    assert image["part"]["mimeType"] == "image/jpeg"
    assert text["conversation_id"] == image["conversation_id"]
    assert text["part"] is None
    assert text["attachment"]["name"] == "example.txt"
    assert text["attachment"]["size"] == 10


def test_oversize_file_is_refused_before_sending(mock: MockUpstream, tmp_path: Path) -> None:
    # Given a sparse file one byte over 100 MB
    big = tmp_path / "huge.bin"
    subprocess.run(["truncate", "-s", str(100 * 1024 * 1024 + 1), str(big)], check=True)
    calls: list[str] = []

    async def limiter(endpoint: str) -> None:
        calls.append(endpoint)

    before = mock.stats()

    async def go(http: httpx.AsyncClient) -> None:
        client = Gpt4ApiClient(gpt4api_config(mock), http, before_call=limiter)
        await client.run_ask(ConversationState(), ask(1, files=[str(big)]))

    # When it is part of an ask, then a FinalError(413) names it and nothing was sent
    with pytest.raises(FinalError) as info:
        run(go)
    assert info.value.status == 593
    assert "huge.bin" in str(info.value)
    assert calls == []
    assert delta(before, mock.stats(), "calls", "uploaded") == 0


def test_missing_local_file_is_final(mock: MockUpstream, tmp_path: Path) -> None:
    async def go(http: httpx.AsyncClient) -> None:
        client = Gpt4ApiClient(gpt4api_config(mock), http)
        await client.run_ask(
            ConversationState(), ask(1, images=["nope.png"]), base_dir=str(tmp_path)
        )

    with pytest.raises(FinalError) as info:
        run(go)
    assert info.value.status == 590 and "nope.png" in info.value.message


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "folder"])
def test_files_that_are_not_regular_are_refused_without_hanging(
    mock: MockUpstream, tmp_path: Path, kind: str
) -> None:
    """/dev/zero once spun the multipart encoder forever; a FIFO blocked in open()."""
    if kind == "dev-zero":
        path = "/dev/zero"
    elif kind == "fifo":
        path = str(tmp_path / "pipe.png")
        os.mkfifo(path)  # no writer: a blocking open() would never return
    else:
        path = str(tmp_path)
    before = mock.stats()

    async def go(http: httpx.AsyncClient) -> None:
        client = Gpt4ApiClient(gpt4api_config(mock), http)
        await asyncio.wait_for(
            client.run_ask(ConversationState(), ask(1, images=[path])), timeout=10
        )

    with pytest.raises(FinalError) as info:
        run(go)
    assert info.value.status == 590 and "not a regular file" in info.value.message
    assert delta(before, mock.stats(), "calls", "uploaded") == 0


def test_a_file_growing_during_its_upload_sends_only_its_size_at_open(
    mock: MockUpstream, tmp_path: Path
) -> None:
    path = tmp_path / "log.txt"
    path.write_bytes(b"y" * 1000)

    async def go(http: httpx.AsyncClient) -> dict[str, Any]:
        client = Gpt4ApiClient(gpt4api_config(mock), http)
        with path.open("ab") as grow:
            fh = open_local_and_grow(str(path), grow)
            with fh:
                answer = await client.http.post(
                    mock.url + "/standard/uploaded",
                    headers=client.config.headers(),
                    data={"type": "my_files"},
                    files={"file": ("log.txt", fh, "text/plain")},
                )
        return dict(answer.json())

    answer = run(go)
    assert answer["attachment"]["size"] == 1000


def open_local_and_grow(path: str, grow: Any) -> LocalFile:
    fh = open_local(path, 10_000)
    grow.write(b"z" * 5000)
    grow.flush()
    return fh


def test_upload_streams_from_disk_in_small_chunks(
    mock: MockUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a 3 MB file whose reads are recorded
    path = tmp_path / "blob.txt"
    path.write_bytes(b"x" * (3 * 1024 * 1024))
    reads: list[int] = []

    real_readinto = LocalFile.readinto

    def recording(self: LocalFile, buffer: Any) -> int:
        n = real_readinto(self, buffer)
        reads.append(n)
        return n

    monkeypatch.setattr(LocalFile, "readinto", recording)

    async def go(http: httpx.AsyncClient) -> dict[str, Any]:
        return await Gpt4ApiClient(gpt4api_config(mock), http).upload(str(path), "my_files", None)

    answer = run(go)
    # Then the whole file arrived, read in many chunks of at most 64 KiB
    assert answer["attachment"]["size"] == 3 * 1024 * 1024
    assert max(reads) <= 64 * 1024
    assert len([r for r in reads if r]) >= 3 * 1024 * 1024 // (64 * 1024)


def test_gizmo_id_goes_to_gizmos(mock: MockUpstream) -> None:
    before = mock.stats()

    async def go(http: httpx.AsyncClient) -> dict[str, Any]:
        client = Gpt4ApiClient(gpt4api_config(mock, gizmo_id="g-HMNcP6w7d"), http)
        answer, _ = await client.run_ask(ConversationState(), ask(1, "1+2+...+100=?"))
        return answer

    answer = run(go)
    meta = answer["contents"][-1]["message"]["metadata"]
    assert meta["gizmo_id"] == "g-HMNcP6w7d"
    assert meta["model_slug"] == "gpt-4-gizmo"
    assert delta(before, mock.stats(), "calls", "gizmos") == 1


def test_overrides_and_explicit_urls_win(mock: MockUpstream) -> None:
    # Given a config whose base URL is unreachable but whose explicit URLs point at the tier
    config = UpstreamConfig(
        base_url="http://127.0.0.1:9",
        chat_url=f"{mock.url}/concurrent/all-tools",
        upload_url=f"{mock.url}/concurrent/uploaded",
        access_token=mock.token,
    )
    overrides = AskOverrides(model="gpt-4-custom")

    async def go(http: httpx.AsyncClient) -> dict[str, Any]:
        client = Gpt4ApiClient(config, http)
        answer, _ = await client.run_ask(ConversationState(), ask(1), overrides=overrides)
        return answer

    answer = run(go)
    assert answer["contents"][-1]["message"]["metadata"]["model_slug"] == "gpt-4-custom"


def test_tier_selects_the_path() -> None:
    config = UpstreamConfig(base_url="https://x.test/", tier="concurrent")
    client = Gpt4ApiClient(config, httpx.AsyncClient())
    assert client.chat_url(config) == "https://x.test/concurrent/all-tools"
    assert client.upload_url(config) == "https://x.test/concurrent/uploaded"
    gizmo = config.model_copy(update={"gizmo_id": "g-1"})
    assert client.chat_url(gizmo) == "https://x.test/concurrent/gizmos"


def test_unknown_conversation_is_final_404(mock: MockUpstream) -> None:
    async def go(http: httpx.AsyncClient) -> None:
        client = Gpt4ApiClient(gpt4api_config(mock), http)
        await client.run_ask(ConversationState(conversation_id="never-issued"), ask(1))

    with pytest.raises(FinalError) as info:
        run(go)
    assert info.value.status == 404


def test_broken_chain_is_final_409_and_counted(mock: MockUpstream) -> None:
    before = mock.stats()

    async def go(http: httpx.AsyncClient) -> None:
        client = Gpt4ApiClient(gpt4api_config(mock), http)
        _, state = await client.run_ask(ConversationState(), ask(1))
        await client.run_ask(
            ConversationState(state.conversation_id, parent_message_id="wrong"), ask(2)
        )

    with pytest.raises(FinalError) as info:
        run(go)
    assert info.value.status == 409
    assert delta(before, mock.stats(), "chain_errors") == 1


def test_draw_trigger_yields_downloadable_urls(mock: MockUpstream) -> None:
    async def go(http: httpx.AsyncClient) -> tuple[dict[str, Any], bytes]:
        client = Gpt4ApiClient(gpt4api_config(mock), http)
        answer, _ = await client.run_ask(ConversationState(), ask(1, "画一只猫 please draw"))
        body = (await http.get(answer["downloads"][0])).content
        return answer, body

    answer, body = run(go)
    (url,) = answer["downloads"]
    rscd = parse_qs(urlsplit(url).query)["rscd"][0]
    assert "rscd=attachment%3B%20filename%3Dimage.webp" in url
    assert unquote(rscd) == "attachment; filename=image.webp"
    assert len(body) == 4096


def test_hostile_name_trigger_advertises_traversal_names(mock: MockUpstream) -> None:
    async def go(http: httpx.AsyncClient) -> dict[str, Any]:
        client = Gpt4ApiClient(gpt4api_config(mock), http)
        answer, _ = await client.run_ask(ConversationState(), ask(1, "draw hostile-name"))
        return answer

    names = [
        parse_qs(urlsplit(u).query)["rscd"][0].split("filename=", 1)[1]
        for u in run(go)["downloads"]
    ]
    assert "../../etc/passwd" in names
    assert any("\\" in n for n in names) and any("\x00" in n for n in names)


@pytest.mark.parametrize(
    ("kind", "status"),
    [("5xx", 503), ("bad-json", 596), ("drop", 597), ("truncate", 596)],
)
def test_faults_are_retryable(mock: MockUpstream, kind: str, status: int) -> None:
    async def go(http: httpx.AsyncClient) -> None:
        await Gpt4ApiClient(gpt4api_config(mock), http).run_ask(ConversationState(), ask(1))

    with pytest.raises(RetryableError) as info:
        run(go, **fault(kind))
    assert info.value.status == status


def test_hang_past_read_timeout_is_retryable_598(mock: MockUpstream) -> None:
    async def go(http: httpx.AsyncClient) -> None:
        config = gpt4api_config(mock, read_timeout=0.3)
        await Gpt4ApiClient(config, http).run_ask(ConversationState(), ask(1))

    with pytest.raises(RetryableError) as info:
        run(go, **fault("hang"))
    assert info.value.status == 598


def test_connection_refused_is_retryable_597() -> None:
    async def go(http: httpx.AsyncClient) -> None:
        config = UpstreamConfig(base_url="http://127.0.0.1:9", access_token="sk-x")
        await Gpt4ApiClient(config, http).run_ask(ConversationState(), ask(1))

    with pytest.raises(RetryableError) as info:
        run(go)
    assert info.value.status == 597


def test_wrong_token_is_final_401_and_never_shown(mock: MockUpstream) -> None:
    secret = "sk-SECRET-do-not-print-4711"
    config = UpstreamConfig(base_url=mock.url, access_token=secret)

    async def go(http: httpx.AsyncClient) -> None:
        await Gpt4ApiClient(config, http).run_ask(ConversationState(), ask(1))

    with pytest.raises(FinalError) as info:
        run(go)
    assert info.value.status == 401
    for text in (str(info.value), repr(info.value), info.value.message, repr(config), str(config)):
        assert secret not in text
    assert secret not in repr(Gpt4ApiClient(config, httpx.AsyncClient()))


def test_call_abandoned_by_a_timeout_has_no_effect_so_the_retry_chains() -> None:
    # Given a slow simulator and a conversation with one answer
    with MockUpstream("--latency-ms", "400") as m:

        async def go(http: httpx.AsyncClient) -> dict[str, Any]:
            patient = Gpt4ApiClient(gpt4api_config(m), http)
            hasty = Gpt4ApiClient(gpt4api_config(m, read_timeout=0.1), http)
            _, state = await patient.run_ask(ConversationState(), ask(1))
            # When ask 2 times out and is then retried with the same state
            with pytest.raises(RetryableError):
                await hasty.run_ask(state, ask(2))
            await asyncio.sleep(0.5)
            answer, _ = await patient.run_ask(state, ask(2))
            return answer

        answer = run(go)
        stats = m.stats()
    # Then the retry chains: the abandoned call did not advance the conversation
    assert answer["message_id"]
    assert stats["chain_errors"] == 0 and stats["in_flight"] == 0
