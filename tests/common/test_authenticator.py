"""The authenticator: signed bodies verify on their topic only; anything else is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpt4batch.common.authenticator import (
    OVERHEAD,
    Authenticator,
    from_config,
    load_secret,
    write_secret,
)
from gpt4batch.common.errors import ConfigError

BODY = b'{"v":1,"batch":"b","seq":3,"record":{"id":"r","asks":[]}}'


def test_signed_body_is_json_with_the_same_fields_and_verifies() -> None:
    auth = Authenticator(b"s" * 32)
    signed = auth.sign("p.results", BODY)
    assert len(signed) == len(BODY) + OVERHEAD
    data = json.loads(signed)
    assert {k: v for k, v in data.items() if k != "auth"} == json.loads(BODY)
    assert auth.verify("p.results", signed) is None


@pytest.mark.parametrize(
    "tamper",
    [
        lambda s: s.replace(b'"seq":3', b'"seq":4'),  # body changed
        lambda s: s[:-10] + (b"0" if s[-10:-9] != b"0" else b"1") + s[-9:],  # MAC changed
        lambda s: BODY,  # no authenticator at all
        lambda s: b"",
    ],
)
def test_tampered_or_missing_authenticator_is_refused(tamper: object) -> None:
    auth = Authenticator(b"s" * 32)
    signed = auth.sign("p.results", BODY)
    assert auth.verify("p.results", tamper(signed)) is not None  # type: ignore[operator]


def test_other_topic_or_other_secret_does_not_verify() -> None:
    signed = Authenticator(b"s" * 32).sign("p.results", BODY)
    assert Authenticator(b"s" * 32).verify("p.downloaded", signed) is not None
    assert Authenticator(b"t" * 32).verify("p.results", signed) is not None


def test_short_secret_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="at least"):
        Authenticator(b"short")


def test_secret_from_file_wins_over_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPT4BATCH_BUS_SECRET", "e" * 32)
    path = write_secret(tmp_path / "sub" / "bus-secret")
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_secret(str(path)) == path.read_bytes().strip()
    assert write_secret(path) == path and load_secret(str(path)) == path.read_bytes().strip()
    assert load_secret(None) == b"e" * 32


def test_no_secret_is_a_config_error_unless_generated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPT4BATCH_BUS_SECRET", raising=False)
    with pytest.raises(ConfigError, match="no bus secret"):
        from_config(None)
    a, b = from_config(None, generate=True), from_config(None, generate=True)
    assert b.verify("t", a.sign("t", BODY)) is not None  # one random secret per process
    with pytest.raises(ConfigError, match="cannot read"):
        from_config("/nonexistent/bus-secret")


def test_repr_never_shows_the_secret() -> None:
    assert "s" * 32 not in repr(Authenticator(b"s" * 32))
