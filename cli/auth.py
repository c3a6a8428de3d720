"""`gpt4batch auth` (alias `authsvc`): get an access token and store it with mode 0600.

Posts `{email, password, ttl}` to the console URL like the original, keeps the
JSON answer in the credentials file, prints the user name and expiry. Neither
the password nor the token is ever printed or logged.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import httpx

from gpt4batch.common.credentials import (
    DEFAULT_CREDENTIALS,
    parse_expiry,
    warn_secret_in_argv,
    write_credentials,
)
from gpt4batch.common.logging import redact_text, register_secret
from gpt4batch.common.settings import CliParser

#: The account site (seed 000: sign-up and the token console) is gpt4api.shop; the API the
#: batch calls (uploads, chat) is gpt4api.plus (common/upstreams/config.py).
DEFAULT_CONSOLE_URL = "https://beta.gpt4api.shop/console/access_token"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(
        prog="gpt4batch auth",
        description="Get an access token for batch runs and store it in the credentials file. "
        "The console keeps only one valid token per account: a new one replaces the old.",
    )
    p.add_argument("-e", "--email", required=True, help="account e-mail")
    p.add_argument(
        "-p",
        "--password",
        help="account password (prompted without echo when not given; on the command line "
        "every user of the host sees it, and a warning says so)",
    )
    p.add_argument("-t", "--ttl", type=int, default=86400, help="token lifetime, seconds")
    p.add_argument(
        "-u",
        "--url",
        default=DEFAULT_CONSOLE_URL,
        help="console access_token URL: the account site is gpt4api.shop (as in the original); "
        "the API the batch calls is gpt4api.plus",
    )
    p.add_argument(
        "--credentials",
        type=Path,
        default=DEFAULT_CREDENTIALS,
        help=f"where to store the token (default {DEFAULT_CREDENTIALS})",
    )
    p.add_argument("--timeout", type=float, default=30.0, help="HTTP timeout, seconds")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    password = args.password
    if password:
        warn_secret_in_argv(
            "gpt4batch auth", "-p/--password", "omitting -p (it is then asked for without echo)"
        )
    else:
        if not sys.stdin.isatty():
            print("gpt4batch auth: error: give -p/--password (no terminal to ask)", file=sys.stderr)
            return EXIT_USAGE
        password = getpass.getpass("password: ")
    register_secret(password)
    try:
        response = httpx.post(
            args.url,
            json={"email": args.email, "password": password, "ttl": args.ttl},
            timeout=args.timeout,
        )
    except httpx.HTTPError as exc:
        print(f"gpt4batch auth: cannot reach {args.url}: {type(exc).__name__}", file=sys.stderr)
        return EXIT_FAILED
    if response.status_code != 200:
        detail = redact_text(response.text[:200])
        print(
            f"gpt4batch auth: the console refused ({response.status_code}): {detail}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    try:
        answer = response.json()
        token = answer["access_token"]
    except (ValueError, KeyError, TypeError):
        print("gpt4batch auth: the console's answer has no access_token", file=sys.stderr)
        return EXIT_FAILED
    register_secret(token)
    path = write_credentials(args.credentials, answer)
    expires = parse_expiry(answer.get("expired_at"))
    when = datetime.fromtimestamp(expires).isoformat(timespec="seconds") if expires else "unknown"
    print(f"signed in as {answer.get('username') or args.email}; token expires {when}")
    print(f"stored in {path} (mode 0600)")
    return EXIT_OK
