"""The token goes only to hosts the operator configured; a bad URL is a usage error."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import httpx
import pytest

from gpt4batch.common.errors import ConfigError, FinalError
from gpt4batch.common.messages import Ask, AskOverrides
from gpt4batch.common.upstreams import ConversationState, Gpt4ApiClient, UpstreamConfig
from gpt4batch.common.upstreams import config as config_module

from ._helpers import MockUpstream, delta, run


def ask(content: str = "hi") -> Ask:
    return Ask(id="a1", content=content)


def test_chat_url_only_keeps_gizmo_calls_on_the_configured_host(
    mock: MockUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--chat-url`/`--upload-url` and no base URL: an ask's gizmo_id must not send the
    token to the default host (made a recording transport here)."""
    default_host_calls: list[httpx.Request] = []

    async def default_host(request: httpx.Request) -> httpx.Response:
        default_host_calls.append(request)
        return httpx.Response(500)

    monkeypatch.setattr(config_module, "DEFAULT_GPT4API_BASE", "https://default.invalid")
    config = UpstreamConfig(
        kind="gpt4api",
        chat_url=f"{mock.url}/standard/all-tools",
        upload_url=f"{mock.url}/standard/uploaded",
        access_token=mock.token,
    )
    assert config.token_origins() == {config_module.origin(mock.url)}
    before = mock.stats()
    mounts = {"https://default.invalid": httpx.MockTransport(default_host)}

    async def go(http: httpx.AsyncClient) -> dict[str, Any]:
        client = Gpt4ApiClient(config, http)
        overrides = AskOverrides(gizmo_id="g-HMNcP6w7d")
        answer, _ = await client.run_ask(ConversationState(), ask(), overrides=overrides)
        return answer

    answer = run(go, mounts=mounts)
    assert answer["message_id"]
    assert default_host_calls == []
    assert delta(before, mock.stats(), "calls", "gizmos") == 1


def test_a_call_to_an_unconfigured_host_is_refused_before_sending() -> None:
    sent: list[httpx.Request] = []

    async def anywhere(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={})

    config = UpstreamConfig(
        kind="gpt4api",
        chat_url="https://chat.example/standard/all-tools",
        gizmo_url="https://elsewhere.example/gizmos",  # a different host: allowed, it was given
        access_token="sk-secret",
    )

    async def go(http: httpx.AsyncClient) -> None:
        client = Gpt4ApiClient(config, http)
        await client.request_json("chat", "POST", "https://evil.example/x", config, json={})

    with pytest.raises(FinalError) as info:
        run(go, transport=httpx.MockTransport(anywhere))
    assert info.value.status == 595 and "evil.example" in info.value.message
    assert "sk-secret" not in str(info.value)
    assert sent == []
    assert "https://elsewhere.example:443" in config.token_origins()


@pytest.mark.parametrize(
    ("flag", "url", "error"),
    [
        ("--base-url", "ftp://example.com", "unsupported URL scheme 'ftp'"),
        ("--chat-url", "example.com/chat", "unsupported URL scheme 'none'"),
        ("--upload-url", "https:///uploaded", "no host"),
    ],
)
def test_bad_upstream_urls_are_config_errors(flag: str, url: str, error: str) -> None:
    field = flag[2:].replace("-", "_")
    with pytest.raises(ConfigError, match=error) as info:
        UpstreamConfig(**{field: url}).check_urls()
    assert str(info.value).startswith(flag)


def test_caller_with_an_unknown_scheme_exits_2_with_one_line() -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "gpt4batch.cli", "caller", "--base-url", "gopher://h",
            "--nsqd-tcp-address", "127.0.0.1:1",
        ],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "GPT4BATCH_ACCESS_TOKEN": "sk-x"},  # not argv: that warns
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--base-url: unsupported URL scheme 'gopher'" in lines[0]
