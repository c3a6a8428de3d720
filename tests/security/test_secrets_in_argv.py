"""Secrets on the command line (issue 18, "Keys and tokens are never accepted in argv
without a warning"): every user of the host reads argv (ps, /proc/<pid>/cmdline).

`--nsq-auth-secret` is on every NSQ command; given as a flag it still works but each
command says so in one line and names the quiet ways (`--nsq-auth-secret-file`, the
environment variable). The secret itself is never echoed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from gpt4batch.cli import dead, reconcile
from gpt4batch.common.errors import ConfigError
from gpt4batch.common.settings import BaseServiceSettings, load
from gpt4batch.services.caller import cli as caller_cli
from gpt4batch.services.downloader import cli as downloader_cli
from gpt4batch.services.gateway import cli as gateway_cli
from gpt4batch.services.ingest import cli as ingest_cli
from gpt4batch.services.sink import cli as sink_cli

SECRET = "nsq-auth-s3cret-in-argv"
Main = Callable[[Sequence[str]], int]

# Each command with arguments that fail right after parsing (exit 2): the warning is
# about argv, so it comes before any check of the values and before connecting.
COMMANDS: dict[str, tuple[Main, list[str]]] = {
    "sink": (sink_cli.main, ["--max-msg-size", "1"]),
    "downloader": (downloader_cli.main, ["--max-msg-size", "1"]),
    "caller": (caller_cli.main, ["--max-msg-size", "1"]),
    "ingest": (ingest_cli.main, ["--max-msg-size", "1"]),
    "gateway": (gateway_cli.main, ["--max-msg-size", "1"]),
    "reconcile": (reconcile.main, ["--max-msg-size", "1"]),
    "dead": (dead.main, ["list", "--limit", "0"]),
}


def run_main(main: Main, argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.fixture(autouse=True)
def _no_secret_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPT4BATCH_NSQ_AUTH_SECRET", raising=False)
    monkeypatch.delenv("GPT4BATCH_NSQ_AUTH_SECRET_FILE", raising=False)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_an_nsq_auth_secret_in_argv_is_warned_about_once(
    name: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    main, failing = COMMANDS[name]
    head, tail = (failing[:1], failing[1:]) if name == "dead" else ([], failing)
    assert run_main(main, [*head, "--nsq-auth-secret", SECRET, *tail]) == 2
    loud = capsys.readouterr()
    warnings = [line for line in loud.err.splitlines() if "warning: --nsq-auth-secret" in line]
    assert len(warnings) == 1, loud.err
    assert "--nsq-auth-secret-file" in warnings[0] and "GPT4BATCH_NSQ_AUTH_SECRET" in warnings[0]
    assert SECRET not in loud.err + loud.out

    (tmp_path / "nsq-secret").write_text(SECRET + "\n")
    given = ["--nsq-auth-secret-file", str(tmp_path / "nsq-secret")]
    assert run_main(main, [*head, *given, *tail]) == 2
    quiet = capsys.readouterr()
    assert "warning" not in quiet.err and SECRET not in quiet.err + quiet.out


def test_a_gateway_api_key_in_argv_is_warned_about_once(capsys: pytest.CaptureFixture[str]) -> None:
    """`gateway --api-key KEY` says so as every secret flag does: one line, at parse time
    (before any value is checked), naming the quiet ways, never the key."""
    key = "sk-gateway-key-in-argv-0123456789"
    assert run_main(gateway_cli.main, ["--api-key", key, "--max-msg-size", "1"]) == 2
    loud = capsys.readouterr()
    warnings = [line for line in loud.err.splitlines() if "warning: --api-key " in line]
    assert len(warnings) == 1, loud.err
    assert "--api-key-file" in warnings[0] and "GPT4BATCH_API_KEYS" in warnings[0]
    assert key not in loud.err + loud.out


def test_a_gateway_webhook_secret_in_argv_is_warned_about_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`gateway --webhook-secret whsec_…` as `--api-key`: one line at parse time naming the
    quiet ways, never the secret (not even when the secret is then refused as malformed)."""
    secret = "whsec_not-a-valid-secret-in-argv-0123"
    argv = ["--api-key", "k" * 20, "--data-dir", "unused", "--webhook-url", "http://h/x"]
    assert run_main(gateway_cli.main, [*argv, "--webhook-secret", secret]) == 2
    loud = capsys.readouterr()
    warnings = [line for line in loud.err.splitlines() if "warning: --webhook-secret " in line]
    assert len(warnings) == 1, loud.err
    assert "--webhook-secret-file" in warnings[0] and "GPT4BATCH_WEBHOOK_SECRET" in warnings[0]
    assert "not a webhook secret" in loud.err and "Traceback" not in loud.err
    assert secret.removeprefix("whsec_") not in loud.err + loud.out


def test_the_secret_file_is_read_and_refused_when_unusable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "nsq-secret"
    path.write_text(f"  {SECRET}\n")
    settings = load(BaseServiceSettings, nsq_auth_secret_file=str(path))
    assert settings.nsq_auth_secret is not None
    assert settings.nsq_auth_secret.get_secret_value() == SECRET
    assert SECRET not in repr(settings)

    monkeypatch.setenv("GPT4BATCH_NSQ_AUTH_SECRET", "from-env")
    with pytest.raises(ConfigError, match="not both"):
        load(BaseServiceSettings, nsq_auth_secret_file=str(path))
    monkeypatch.delenv("GPT4BATCH_NSQ_AUTH_SECRET")
    monkeypatch.setenv("GPT4BATCH_NSQ_AUTH_SECRET_FILE", str(path))
    from_env = load(BaseServiceSettings).nsq_auth_secret
    assert from_env is not None and from_env.get_secret_value() == SECRET

    path.write_text("\n")
    with pytest.raises(ConfigError, match=r"--nsq-auth-secret-file .* is empty"):
        load(BaseServiceSettings)
    with pytest.raises(ConfigError, match="cannot read"):
        load(BaseServiceSettings, nsq_auth_secret_file=os.fspath(tmp_path / "missing"))


def test_the_secret_file_flag_is_in_every_nsq_commands_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, (main, _) in COMMANDS.items():
        head = ["list"] if name == "dead" else []
        assert run_main(main, [*head, "--help"]) == 0
        assert "--nsq-auth-secret-file" in capsys.readouterr().out, name


def test_an_nsq_auth_secret_from_the_environment_is_masked_in_log_lines(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from gpt4batch.common.logging import redact_text
    from gpt4batch.services.sink.settings import SinkSettings

    monkeypatch.setenv("GPT4BATCH_NSQ_AUTH_SECRET", "nsqd-auth-from-env-1234")
    SinkSettings(out_dir=str(tmp_path))
    assert redact_text("auth failed for nsqd-auth-from-env-1234") == "auth failed for ***"
