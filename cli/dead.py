"""`gpt4batch dead list|replay`: inspect and replay dead letters without losing them.

Every service creates the channel `keep` on `<prefix>.dead` at start, so each
dead letter stays there (the sink's channel writes the record's failed line).
`list` takes the letters from `keep`, holds them while it prints, and gives
every one back (REQ): nothing is consumed, and running it again shows the
same letters. `replay` republishes each letter's original body to the topic it
died on (after a fix: a new token, a bigger limit, a repaired caller) and
only then finishes the letter; a letter whose body was truncated cannot be
replayed and stays. (`nsq_tail` on `…dead` would consume the letters.)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from gpt4batch.common import logging as glog
from gpt4batch.common.authenticator import from_config as authenticator_from_config
from gpt4batch.common.bus import Delivery
from gpt4batch.common.credentials import warn_secrets_in_argv
from gpt4batch.common.errors import BusError, ConfigError, Requeue
from gpt4batch.common.messages import DeadLetter
from gpt4batch.common.nsq.bus import NsqBus
from gpt4batch.common.settings import BaseServiceSettings, CliParser, add_flags, load
from gpt4batch.common.topics import Channels

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def original_body(letter: DeadLetter) -> bytes | None:
    """The whole original body, or None when the letter kept only its first bytes."""
    if letter.body_truncated:
        return None
    if letter.body is not None:
        return letter.body.encode()
    if letter.body_b64 is not None:
        return base64.b64decode(letter.body_b64)
    return None


@dataclass
class Held:
    """Letters taken from `keep` and held (in flight) until the command decides."""

    letters: list[DeadLetter] = field(default_factory=list)
    last: float = field(default_factory=time.monotonic)
    decided: asyncio.Event = field(default_factory=asyncio.Event)
    replay: set[int] = field(default_factory=set)


def describe(letter: DeadLetter) -> str:
    kept = "replayable" if original_body(letter) is not None else "truncated: cannot replay"
    if letter.unauthenticated:
        kept += "; refused: no valid authenticator"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(letter.at))
    return (
        f"{letter.id}  {when}Z  {letter.topic}/{letter.channel}  attempts {letter.attempts}  "
        f"({kept})  {letter.reason[:200]}"
    )


async def take(
    settings: BaseServiceSettings, limit: int, quiet: float, timeout: float
) -> tuple[NsqBus, Held]:
    """Subscribe to `keep` and hold up to `limit` letters until none came for `quiet` s."""
    # `dead` signs nothing (a replay is verbatim) and verifies nothing (it shows every
    # letter): its own secret if there is none configured.
    secret = authenticator_from_config(settings.bus_secret_file, generate=True)
    bus = NsqBus(settings, service="dead", connect_timeout=timeout, authenticator=secret)
    held = Held()

    async def hold(letter: DeadLetter, delivery: Delivery) -> None:
        index = len(held.letters)
        held.letters.append(letter)
        held.last = time.monotonic()
        await held.decided.wait()
        if index not in held.replay:
            raise Requeue("kept", delay=0)  # back on `keep`, for the next look

    bus.subscribe(
        bus.topics.dead,
        Channels.DEAD_KEEP,
        DeadLetter,
        hold,
        max_in_flight=limit,
        authenticate=False,  # every letter is shown, verified or not
    )
    await bus.start()
    started = time.monotonic()
    while len(held.letters) < limit:
        now = time.monotonic()
        if now - max(held.last, started) >= quiet:
            break
        await asyncio.sleep(0.05)
    return bus, held


async def run(args: argparse.Namespace, settings: BaseServiceSettings) -> int:
    command: str = args.command
    topic: str | None = args.topic
    bus, held = await take(settings, args.limit, args.quiet, args.connect_timeout)
    failed = 0
    try:
        chosen = [
            (i, letter)
            for i, letter in enumerate(held.letters)
            if topic is None or letter.topic == topic
        ]
        for index, letter in chosen:
            if command == "list":
                if args.json:
                    print(letter.model_dump_json())
                else:
                    print(describe(letter))
                continue
            body = original_body(letter)
            if body is None:
                print(f"kept     {letter.id}: its body was truncated; it cannot be replayed")
                continue
            if args.dry_run:
                print(f"would replay {letter.id} to {letter.topic} ({len(body)} bytes)")
                continue
            try:
                # As received: an authenticated body keeps its authenticator, a forged one
                # stays forged (never signed by a replay).
                await bus.publish(letter.topic, body, verbatim=True)
            except BusError as exc:
                failed += 1
                print(f"kept     {letter.id}: republishing failed: {exc}", file=sys.stderr)
                continue
            held.replay.add(index)  # republished: the letter may go
            print(f"replayed {letter.id} to {letter.topic}")
    finally:
        held.decided.set()
        await bus.stop(grace=10)
    shown = len(chosen)
    more = " (the limit; there may be more)" if len(held.letters) >= args.limit else ""
    verb = "listed" if command == "list" else f"replayed {len(held.replay)} of"
    print(f"gpt4batch dead: {verb} {shown} dead letter(s){more}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def build_parser() -> CliParser:
    p = CliParser(prog="gpt4batch dead", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=CliParser)
    for name, text in (
        ("list", "show the dead letters; every one stays (read from the `keep` channel)"),
        ("replay", "republish each letter's body to the topic it died on, then drop the letter"),
    ):
        s = sub.add_parser(name, help=text, description=text)
        s.add_argument("--topic", default=None, help="only letters that died on this topic")
        s.add_argument("--limit", type=int, default=1000, help="letters to take at most")
        s.add_argument("--quiet", type=float, default=1.0, help="stop after this long with none")
        s.add_argument("--connect-timeout", type=float, default=5.0, help="seconds to reach nsqd")
        if name == "list":
            s.add_argument("--json", action="store_true", help="one JSON letter per line")
        else:
            s.add_argument("--dry-run", action="store_true", help="say what would be replayed")
        add_flags(s, BaseServiceSettings)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warn_secrets_in_argv("gpt4batch dead", sys.argv[1:] if argv is None else argv)
    if args.limit < 1:
        parser.error("--limit must be at least 1")
    try:
        settings = load(BaseServiceSettings, args)
        if not (settings.nsqd_tcp_address or settings.lookupd_http_address):
            raise ConfigError("give --nsqd-tcp-address or --lookupd-http-address")
    except ConfigError as exc:
        print(f"gpt4batch dead: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    glog.configure(settings.log_format, "warning", service="dead")
    try:
        return asyncio.run(run(args, settings))
    except BusError as exc:
        print(f"gpt4batch dead: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
