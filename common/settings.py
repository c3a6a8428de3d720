"""Settings: every option is a flag and a `GPT4BATCH_*` environment variable.

Each service declares a `pydantic_settings.BaseSettings` subclass. `add_flags`
turns its fields into argparse options (`--field-name`, repeatable for lists)
and `load` builds the settings from the parsed flags, so the precedence is:
flag > environment variable > default. Wrong values fail before anything
connects, with the flag and environment variable named.
"""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_args, get_origin

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gpt4batch.common.cli_help import CliParser as CliParser
from gpt4batch.common.cli_help import DefaultsFormatter as DefaultsFormatter
from gpt4batch.common.cli_help import bool_default
from gpt4batch.common.credentials import read_secret_file
from gpt4batch.common.errors import ConfigError
from gpt4batch.common.logging import register_secret
from gpt4batch.common.topics import DEFAULT_PREFIX, Topics, check_name

ENV_PREFIX = "GPT4BATCH_"

#: The one message-size limit of every mode (embedded run, -n, services, stack, compose);
#: nsqd must run with the same `--max-msg-size` (the stack and compose do).
DEFAULT_MAX_MSG_SIZE = 1024 * 1024  # nsqd's own default: -n works with any stock nsqd

S = TypeVar("S", bound=BaseSettings)


def _split_commas(value: Any) -> Any:
    """Environment variables give lists as `a,b`; flags give them already split."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split_commas)]


class BaseServiceSettings(BaseSettings):
    """Options every service has: logging, metrics, NSQ."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    log_format: typing.Literal["auto", "text", "json", "console"] = Field(
        "auto",
        description="Log lines as text or json (console: text); auto: text on a terminal, "
        "JSON lines elsewhere. Every library's lines (pynsq, tornado) use it too.",
    )
    log_level: str = Field("info", description="Log level (debug, info, warning, error).")
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Port of the Prometheus /metrics endpoint (0: off)."
    )
    metrics_host: str = Field(
        "127.0.0.1",
        description="Address the metrics endpoint listens on (0.0.0.0 to let other hosts "
        "scrape it, as compose does).",
    )
    topic_prefix: str = Field(DEFAULT_PREFIX, description="Prefix of every NSQ topic name.")
    nsqd_tcp_address: CommaList = Field(
        default_factory=list,
        description="nsqd TCP address host:port (repeatable). Publishing goes here.",
    )
    nsqd_http_address: CommaList = Field(
        default_factory=list,
        description="nsqd HTTP address host:port (repeatable), one per --nsqd-tcp-address in "
        "the same order; topics and channels are created there. Without it: the address "
        "nsqlookupd lists, else TCP port + 1.",
    )
    lookupd_http_address: CommaList = Field(
        default_factory=list,
        description="nsqlookupd HTTP address host:port (repeatable). Consumers discover nsqd.",
    )
    max_in_flight: int = Field(200, ge=1, le=2500, description="Messages in flight per consumer.")
    touch_interval: float = Field(
        20.0,
        gt=0,
        description="Seconds between TOUCHes of a message still being worked on (at most a "
        "third of the --msg-timeout nsqd announces).",
    )
    max_attempts: int = Field(
        10, ge=1, description="Deliveries of one message before it is dead-lettered."
    )
    shutdown_grace: float = Field(
        30.0, ge=0, description="Seconds to let in-flight work finish on SIGTERM."
    )
    max_msg_size: int = Field(
        DEFAULT_MAX_MSG_SIZE,
        ge=1024,
        description="Largest message body, in every mode (the in-memory bus too); nsqd must "
        "run with the same --max-msg-size.",
    )
    nsq_auth_secret: SecretStr | None = Field(
        None,
        description="nsqd AUTH secret, if any; prefer --nsq-auth-secret-file or this "
        "environment variable (a flag's value is visible to every user of the host).",
    )
    nsq_auth_secret_file: str | None = Field(
        None, description="File holding the nsqd AUTH secret (e.g. a mounted secret, mode 600)."
    )
    bus_secret_file: str | None = Field(
        None,
        description="File holding the secret the services share to sign and verify results, "
        "download jobs and dead letters (or give the secret itself in GPT4BATCH_BUS_SECRET; "
        "never as a flag). Required by the services; `run` makes its own.",
    )

    @model_validator(mode="after")
    def _check_nsq(self) -> BaseServiceSettings:
        check_name(self.topic_prefix + ".asks", "topic")
        for addr in [*self.nsqd_tcp_address, *self.lookupd_http_address]:
            host, _, port = addr.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"NSQ address {addr!r} is not host:port")
        check_nsqd_http(self.nsqd_tcp_address, self.nsqd_http_address)
        if self.nsq_auth_secret_file:
            if self.nsq_auth_secret is not None:
                raise ConfigError(
                    "give either --nsq-auth-secret/GPT4BATCH_NSQ_AUTH_SECRET or "
                    "--nsq-auth-secret-file, not both"
                )
            secret = read_secret_file(Path(self.nsq_auth_secret_file), "--nsq-auth-secret-file")
            self.nsq_auth_secret = SecretStr(secret)
        if self.nsq_auth_secret is not None:  # from a flag, the environment or the file
            register_secret(self.nsq_auth_secret.get_secret_value())
        return self

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)


def check_nsqd_http(nsqd_tcp: list[str], nsqd_http: list[str]) -> None:
    """--nsqd-http-address pairs with --nsqd-tcp-address by position: one each, or none."""
    for addr in nsqd_http:
        host, _, port = addr.split("://")[-1].rstrip("/").rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"nsqd HTTP address {addr!r} is not host:port")
    if nsqd_http and len(nsqd_http) != len(nsqd_tcp):
        raise ValueError(
            f"{len(nsqd_http)} --nsqd-http-address for {len(nsqd_tcp)} --nsqd-tcp-address: "
            "give one per nsqd, in the same order (or none)"
        )


def _field_type(annotation: Any) -> tuple[type, bool]:
    """The scalar type argparse should convert to, and whether the option repeats."""
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return _field_type(args[0]) if len(args) == 1 else (str, False)
    if origin is list:
        inner, _ = _field_type(get_args(annotation)[0])
        return inner, True
    if origin is typing.Literal:
        return str, False
    if annotation in (int, float, bool, str):
        return annotation, False
    return str, False


def _literal_choices(annotation: Any) -> list[str] | None:
    origin = get_origin(annotation)
    if origin is typing.Literal:
        return [str(a) for a in get_args(annotation)]
    if origin in (typing.Union, types.UnionType):
        for arg in get_args(annotation):
            found = _literal_choices(arg)
            if found:
                return found
    return None


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _says_unset(text: str) -> bool:
    lowered = text.lower()
    return "default" in lowered or "unset" in lowered


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def add_flags(
    parser: argparse.ArgumentParser,
    settings_cls: type[BaseSettings],
    *,
    short: dict[str, str] | None = None,
    skip: set[str] | frozenset[str] = frozenset(),
    title: str = "options",
    advanced: bool = False,
    default_notes: dict[str, str] | None = None,
) -> None:
    """Add one option per settings field; defaults stay None so env vars can fill in.

    `default_notes` replaces a field's stated default where the command's differs
    (e.g. `run` has no conversation deadline in-process); `advanced` lists the group
    under `--help-all` only (a CliParser).
    """
    short = short or {}
    default_notes = default_notes or {}
    heading = f"{title} (each also an environment variable {ENV_PREFIX}<NAME>)"
    if advanced:
        group = parser.add_argument_group(heading, advanced=True)  # type: ignore[call-overload]
    else:
        group = parser.add_argument_group(heading)
    for name, field in settings_cls.model_fields.items():
        if name in skip:
            continue
        scalar, repeat = _field_type(field.annotation)
        names = [flag_name(name)]
        if name in short:
            names.insert(0, short[name])
        help_text = (field.description or "").replace("%", "%%")
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        if field.is_required():
            help_text += " (required)"
        elif name in default_notes:
            help_text += f" (default: {default_notes[name]})"
        elif isinstance(default, bool):
            help_text += " " + bool_default(flag_name(name), default)
        elif default in (None, [], "") or isinstance(default, SecretStr):
            if not _says_unset(help_text):
                help_text += " (default: none)"
        else:
            help_text += f" (default: {default})"
        env = ENV_PREFIX + name.upper()
        help_text += f" [{env}]"
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": help_text}
        choices = _literal_choices(field.annotation)
        if choices:
            kwargs["choices"] = choices
        if scalar is bool:
            kwargs.update(nargs="?", const=True, type=parse_bool, metavar="BOOL")
        elif repeat:
            kwargs.update(action="append", type=scalar)
        else:
            kwargs.update(type=scalar)
        group.add_argument(*names, **kwargs)


def load(settings_cls: type[S], args: argparse.Namespace | None = None, **overrides: Any) -> S:
    """Settings from flags (those given), then environment, then defaults.

    Raises ConfigError naming the flag and environment variable of a bad value.
    """
    given: dict[str, Any] = {}
    if args is not None:
        for name in settings_cls.model_fields:
            value = getattr(args, name, None)
            if value is not None:
                given[name] = value
    given.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return settings_cls(**given)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            where = f"{flag_name(field)} / {ENV_PREFIX}{field.upper()}" if field else "settings"
            problems.append(f"{where}: {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
