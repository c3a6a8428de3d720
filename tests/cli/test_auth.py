"""`gpt4batch auth` against the simulator's console endpoint."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpt4batch.common.credentials import resolve_token
from tests.support.mock_upstream import MockUpstream

TOKEN = "sk-console-issued-token-42"


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    with MockUpstream(
        "--console-email", "me@example.com", "--console-password", "pa55-word!", token=TOKEN
    ) as server:
        yield server


def auth(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpt4batch.cli", "authsvc", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_auth_stores_the_answer_0600_and_prints_no_secret(
    mock: MockUpstream, tmp_path: Path
) -> None:
    creds = tmp_path / "sub" / ".gpt4api-sk.pub"
    result = auth(
        "-e",
        "me@example.com",
        "-p",
        "pa55-word!",
        "-t",
        "3600",
        "-u",
        f"{mock.url}/console/access_token",
        "--credentials",
        str(creds),
    )
    assert result.returncode == 0, result.stderr
    assert "me@example.com" in result.stdout and "expires" in result.stdout
    for secret in (TOKEN, "pa55-word!"):
        assert secret not in result.stdout + result.stderr
    # -p works, but other users of the host see argv: one warning line, naming the prompt
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "visible to every user" in warnings[0], result.stderr
    assert "omitting -p" in warnings[0]
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert json.loads(creds.read_text())["access_token"] == TOKEN
    assert resolve_token(None, creds) == TOKEN


def test_wrong_password_fails_without_echoing_it(mock: MockUpstream, tmp_path: Path) -> None:
    creds = tmp_path / "c.pub"
    result = auth(
        "-e",
        "me@example.com",
        "-p",
        "not-the-password",
        "-u",
        f"{mock.url}/console/access_token",
        "--credentials",
        str(creds),
    )
    assert result.returncode == 1
    assert "401" in result.stderr
    assert "not-the-password" not in result.stdout + result.stderr
    assert not creds.exists()


def test_missing_password_without_a_terminal_is_a_usage_error(tmp_path: Path) -> None:
    result = auth("-e", "me@example.com", "--credentials", str(tmp_path / "c"))
    assert result.returncode == 2
    assert "--password" in result.stderr


def test_expired_token_is_refused_before_any_work(tmp_path: Path) -> None:
    from gpt4batch.common.credentials import write_credentials
    from gpt4batch.common.errors import ConfigError

    creds = write_credentials(
        tmp_path / "c", {"access_token": "t0k3n-value", "expired_at": "2020-01-01T00:00:00"}
    )
    with pytest.raises(ConfigError, match="expired") as info:
        resolve_token(None, creds)
    assert "t0k3n-value" not in str(info.value)
