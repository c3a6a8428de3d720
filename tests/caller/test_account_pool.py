"""The account pool's choice: by load for the account's limits, the same account for a
redelivered conversation, and none out of the rotation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpt4batch.common.messages import IErr
from gpt4batch.common.settings import load
from gpt4batch.services.caller.accounts import AccountPool, AccountSpec, load_accounts
from gpt4batch.services.caller.accounts.pool import account_weight
from gpt4batch.services.caller.limits import LimitSettings, ProcessLimiter
from gpt4batch.services.caller.settings import CallerSettings


def pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AccountPool:
    monkeypatch.setenv("POOL_A", "sk-pool-a")
    monkeypatch.setenv("POOL_B", "sk-pool-b")
    path = tmp_path / "accounts.json"
    accounts = [
        {"name": "a", "token_env": "POOL_A", "qps": 2, "base_url": "http://127.0.0.1:9/v1"},
        {"name": "b", "token_env": "POOL_B", "qps": 1, "base_url": "http://127.0.0.1:9/v1"},
    ]
    path.write_text(json.dumps({"accounts": accounts}))
    settings = load(CallerSettings, accounts=path, upstream="openai")
    limiter = lambda s: ProcessLimiter(LimitSettings(s.qps, s.concurrency))  # noqa: E731
    return AccountPool.build(load_accounts(path), settings, limiter)


def test_choice_follows_the_limits_and_a_redelivery_keeps_its_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts = pool(tmp_path, monkeypatch)
    a, b = accounts.accounts
    assert a.limiter.pacer.effective_qps > b.limiter.pacer.effective_qps  # its own limits
    chosen = []
    for seq in range(6):
        account = accounts.choose("batch", seq)
        assert account is not None
        account.in_flight += 1  # running
        chosen.append(account.name)
    assert chosen.count("a") == 4 and chosen.count("b") == 2  # 2:1, as their QPS
    # A redelivery of seq 5 (on b) goes back to b although a is now the less busy.
    b.in_flight += 10
    assert accounts.choose("batch", 5) is b
    assert accounts.choose("batch", 6) is a


def test_a_refused_account_leaves_the_rotation_and_its_conversations_move(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts = pool(tmp_path, monkeypatch)
    a, b = accounts.accounts
    out: list[IErr] = []
    accounts.on_all_out = out.append
    assert accounts.choose("batch", 0) is a
    a.gate.close(IErr(code=401, message="refused"))
    assert accounts.choose("batch", 0) is b  # its redelivery goes elsewhere
    assert all(accounts.choose("batch", seq) is b for seq in range(1, 5))
    assert out == []  # b still in the rotation
    b.gate.close(IErr(code=403, message="refused"))
    assert accounts.choose("batch", 9) is None
    assert [e.code for e in out] == [403]
    a.gate.open()
    assert accounts.choose("batch", 9) is a


@pytest.mark.parametrize(
    ("account", "caller", "weight"),
    [
        ({"qps": 5, "concurrency": 9}, {"qps": 1}, 5.0),  # its QPS first
        ({}, {"qps": 3}, 3.0),  # the caller's QPS where it gives none
        ({"qps": 0, "tpm": 60000}, {}, 60.0),  # no QPS limit: its TPM / 1000
        ({"qps": 0, "concurrency": 7}, {}, 7.0),  # neither: its concurrency
        ({"qps": 0}, {"concurrency": 11}, 11.0),  # … else the caller's
    ],
)
def test_an_accounts_weight_is_what_bounds_it(
    account: dict[str, float], caller: dict[str, float], weight: float
) -> None:
    spec = AccountSpec(name="x", token_env="X", **account)  # type: ignore[arg-type]
    assert account_weight(spec, load(CallerSettings, **caller)) == weight
