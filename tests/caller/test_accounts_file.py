"""The accounts file (`--accounts`): JSON or YAML, a mistake is one line naming the file and
the field, exit 2 (`run` and `caller`), and no token in any message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpt4batch.common.errors import ConfigError
from gpt4batch.services.caller.accounts import load_accounts
from tests.cli.test_run import write_input

SECRET = "sk-account-secret-123"


def good(tmp_path: Path) -> list[dict[str, object]]:
    (tmp_path / "b.tok").write_text(SECRET + "\n")
    return [
        {"name": "a", "token_env": "ACC_TOKEN_A", "qps": 5, "concurrency": 20},
        {"name": "b", "token_file": str(tmp_path / "b.tok"), "qps": 2, "tpm": 60000},
    ]


def test_json_and_yaml_files_give_the_same_accounts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACC_TOKEN_A", "sk-a")
    accounts = good(tmp_path)
    (tmp_path / "acc.json").write_text(json.dumps({"accounts": accounts}))
    yaml_text = "accounts:\n" + "".join("  - " + json.dumps(account) + "\n" for account in accounts)
    (tmp_path / "acc.yaml").write_text(yaml_text)
    from_json = load_accounts(tmp_path / "acc.json")
    from_yaml = load_accounts(tmp_path / "acc.yaml")
    assert from_json == from_yaml
    assert [(a.name, a.qps, a.tpm) for a in from_json] == [("a", 5, None), ("b", 2, 60000)]
    assert from_json[1].token("x").get_secret_value() == SECRET


def test_a_token_file_may_be_the_credentials_json(tmp_path: Path) -> None:
    creds = tmp_path / "creds.json"
    creds.write_text(json.dumps({"access_token": SECRET, "username": "u"}))
    (tmp_path / "acc.json").write_text(
        json.dumps({"accounts": [{"name": "c", "token_file": str(creds)}]})
    )
    (account,) = load_accounts(tmp_path / "acc.json")
    assert account.token("x").get_secret_value() == SECRET


def mistakes(tmp_path: Path) -> list[tuple[str, object, str]]:
    """(name, file content, what the error must say) — every one names the field."""
    a, b = good(tmp_path)
    return [
        ("no accounts", {"accounts": []}, "accounts: List should have at least 1 item"),
        ("unknown field", {"accounts": [{**a, "qsp": 3}]}, "accounts[0].qsp (account 'a')"),
        ("negative qps", {"accounts": [a, {**b, "qps": -1}]}, "accounts[1].qps (account 'b')"),
        ("two token sources", {"accounts": [{**a, "token_file": "x"}]}, "exactly one of"),
        ("no token source", {"accounts": [{"name": "n"}]}, "exactly one of token_env"),
        ("bad name", {"accounts": [{**a, "name": "a b"}]}, "name: use 1-32 letters"),
        ("repeated name", {"accounts": [a, {**b, "name": "a"}]}, "name 'a' is repeated"),
        ("unset variable", {"accounts": [{**a, "token_env": "NO_SUCH_VAR_9"}]}, "NO_SUCH_VAR_9"),
        ("missing token file", {"accounts": [{**b, "token_file": "/no/such"}]}, "token_file"),
        ("bad upstream", {"accounts": [{**a, "upstream": "nope"}]}, "accounts[0].upstream"),
        ("not JSON", "{accounts: [", "not valid JSON"),
    ]


@pytest.mark.parametrize("index", range(11))
def test_a_mistake_names_the_file_and_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, index: int
) -> None:
    monkeypatch.setenv("ACC_TOKEN_A", "sk-a")
    name, content, expected = mistakes(tmp_path)[index]
    path = tmp_path / "acc.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(ConfigError) as caught:
        load_accounts(path)
    message = str(caught.value)
    assert message.startswith(f"--accounts {path}: "), (name, message)
    assert expected in message, (name, message)
    assert SECRET not in message


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "acc.yml"
    path.write_text("accounts:\n  - name: a\n    qps: [1\n")
    with pytest.raises(ConfigError, match=r"acc.yml: not valid YAML at line \d"):
        load_accounts(path)


@pytest.mark.parametrize("command", ["run", "caller"])
def test_run_and_caller_say_it_in_one_line_and_exit_2(tmp_path: Path, command: str) -> None:
    write_input(tmp_path, 2)
    (tmp_path / "b.tok").write_text(SECRET)
    path = tmp_path / "acc.yaml"
    path.write_text(f"accounts:\n  - name: b\n    token_file: {tmp_path / 'b.tok'}\n    qps: -2\n")
    args = ["-i", "in.jsonl", "-o", "out.jsonl"] if command == "run" else []
    result = subprocess.run(
        [sys.executable, "-m", "gpt4batch.cli", command, *args, "--accounts", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if str(path) in line]
    assert len(errors) == 1 and "accounts[0].qps (account 'b')" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_estimate_uses_the_accounts_limits_and_prices_and_needs_no_token(
    tmp_path: Path,
) -> None:
    """`run --estimate --accounts`: 10 one-call records at a ($0.02/call, q 3) and b
    ($0.01/call, q 1): 3/4 of the calls on a, $0.175 in all, at least 2.5 s at q 4; the
    token variable is unset (an estimate reads no token)."""
    write_input(tmp_path, 10, asks=1)
    accounts = [
        {"name": "a", "token_env": "UNSET_TOKEN_VAR_1", "qps": 3, "usd_per_call": 0.02},
        {"name": "b", "token_env": "UNSET_TOKEN_VAR_2", "qps": 1, "usd_per_call": 0.01},
    ]
    (tmp_path / "acc.json").write_text(json.dumps({"accounts": accounts}))
    result = subprocess.run(
        [sys.executable, "-m", "gpt4batch.cli", "run", "-i", "in.jsonl", "--estimate",
         "--accounts", "acc.json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.strip().startswith("accounts"))
    assert "cost $0.1750" in line and "a 75% $0.1500, b 25% $0.0250" in line, line
    assert "at least 00:02 at their summed limits (-q 4)" in line, line
