"""The accounts file (`--accounts FILE`, JSON or YAML): what each account is and may use.

    {"accounts": [{"name": "a", "token_env": "VAR" | "token_file": "path",
                   "upstream": "openai", "base_url": "http://…/v1", "qps": 5,
                   "tpm": 60000, "concurrency": 20, "input_usd_per_1m": 2.5,
                   "output_usd_per_1m": 10.0, "usd_per_call": 0, "budget_usd": 50}]}

A limit left out is the caller's own (`--qps`, `--concurrency`, `--tpm`); the
upstream and its URL likewise. A mistake is a ConfigError naming the file and
the field (one line, exit 2). Tokens are read here, registered as secrets (masked
in every log line) and kept in SecretStr: never in argv, logs or exceptions.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from gpt4batch.common.credentials import read_credentials, read_token_file
from gpt4batch.common.errors import ConfigError
from gpt4batch.common.logging import register_secret
from gpt4batch.common.messages import UpstreamKind

#: An account's name goes into its limit group's NSQ topic name: keep it to those characters.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class AccountSpec(BaseModel):
    """One account as the file gives it (no token yet: see `token`)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Unique; letters, digits, _ and - (at most 32).")
    token_env: str | None = Field(None, description="Environment variable holding the token.")
    token_file: Path | None = Field(
        None, description="File holding the token: one line, or `gpt4batch auth`'s JSON."
    )
    upstream: UpstreamKind | None = None
    base_url: str | None = None
    qps: float | None = Field(None, ge=0)
    tpm: int | None = Field(None, ge=0)
    concurrency: int | None = Field(None, ge=1, le=2500)
    input_usd_per_1m: float | None = Field(None, ge=0)
    output_usd_per_1m: float | None = Field(None, ge=0)
    usd_per_call: float | None = Field(None, ge=0)
    budget_usd: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one_token_source(self) -> AccountSpec:
        if not _NAME.match(self.name):
            raise ValueError("name: use 1-32 letters, digits, _ or -")
        if (self.token_env is None) == (self.token_file is None):
            raise ValueError("give exactly one of token_env and token_file")
        return self

    def token_source(self) -> str:
        """Where the token comes from, for messages (never the token)."""
        if self.token_env:
            return f"account {self.name} (${self.token_env})"
        return f"account {self.name} ({self.token_file})"

    def token(self, where: str) -> SecretStr:
        """The account's token, read now (again after a refusal: a rotated secret counts)."""
        if self.token_env:
            value = os.environ.get(self.token_env, "").strip()
            if not value:
                raise ConfigError(
                    f"{where}: account {self.name!r}: token_env {self.token_env} is not set"
                )
            register_secret(value)
            return SecretStr(value)
        assert self.token_file is not None
        path = self.token_file.expanduser()
        try:
            if path.is_file() and path.read_text(encoding="utf-8").lstrip().startswith("{"):
                value = read_credentials(path).access_token
            else:
                value = read_token_file(path)
        except (ConfigError, OSError, UnicodeDecodeError) as exc:
            reason = str(exc).replace("--access-token-file ", "")
            raise ConfigError(f"{where}: account {self.name!r}: token_file: {reason}") from None
        return SecretStr(value)


def pool_source(path: Path) -> str:
    """Where the tokens of a pool come from, for messages about all of them refused."""
    return f"every account of --accounts {path}"


class AccountsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    accounts: list[AccountSpec] = Field(min_length=1)


def _parse(path: Path, text: str) -> Any:
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml  # only when an accounts file is YAML

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"--accounts {path}: not valid YAML{where}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"--accounts {path}: not valid JSON ({exc})") from None


def _field_path(loc: tuple[int | str, ...], data: Any) -> str:
    """`accounts[1].qps`, with the account's name when it has one."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    if len(loc) >= 2 and loc[0] == "accounts" and isinstance(loc[1], int):
        try:
            name = data["accounts"][loc[1]].get("name")
        except (KeyError, IndexError, TypeError, AttributeError):
            name = None
        if isinstance(name, str):
            out += f" (account {name!r})"
    return out


def load_accounts(path: Path, *, read_tokens: bool = True) -> list[AccountSpec]:
    """The accounts of `path`, checked (ConfigError naming the file and the field); their
    tokens are read too unless `read_tokens` is False (`run --estimate` needs none)."""
    path = path.expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"--accounts {path}: cannot read it ({reason})") from None
    data = _parse(path, text)
    try:
        accounts = AccountsFile.model_validate(data).accounts
    except ValidationError as exc:
        error = exc.errors()[0]
        where = _field_path(tuple(error["loc"]), data) or "the file"
        message = str(error["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"--accounts {path}: {where}: {message}") from None
    seen: set[str] = set()
    for account in accounts:
        if account.name in seen:
            raise ConfigError(f"--accounts {path}: accounts: name {account.name!r} is repeated")
        seen.add(account.name)
        if read_tokens:
            account.token(f"--accounts {path}")  # a missing token is a usage error now
    return accounts
