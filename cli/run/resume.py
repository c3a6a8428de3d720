"""The one resume story of `gpt4batch run`: the command printed in the summary.

`gpt4batch run -i OUT -f -o OUT.fix.jsonl` plus every option this run was given
that differs from its default, so it works when pasted in the same folder and
environment. It runs the failed records and those never run (`iErr` 499, after
Ctrl-C or a refused token) and passes the rest through. The token is never
printed: the command repeats how it was given (`--credentials FILE`,
`--access-token-file FILE`, the environment) and says so in a note.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import fields
from pathlib import Path
from typing import Any

from gpt4batch.cli.run.options import RunOptions, build_parser
from gpt4batch.common.filenames import sibling

#: Options the resume sets itself (-i/-o/-f), the token (never printed), help, and the
#: batch id (the resume is a batch of its own: its id comes from its input).
_NOT_REPEATED = frozenset(
    {"input", "out", "fix", "access_token", "batch", "help", "help_all", "version"}
)


def _given(opts: RunOptions) -> dict[str, Any]:
    values = {f.name: getattr(opts, f.name) for f in fields(opts) if f.name != "extra"}
    return {**values, **opts.extra}


def _words(action: argparse.Action, value: Any) -> list[str]:
    flag = action.option_strings[0]
    if isinstance(value, bool):
        return [f"{flag}={str(value).lower()}"]
    if isinstance(value, list):
        return [word for item in value for word in (flag, str(item))]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return [flag, str(value)]


def repeated_flags(opts: RunOptions) -> list[str]:
    """This run's options that differ from their defaults, as command-line words."""
    given = _given(opts)
    words: list[str] = []
    for action in build_parser()._actions:
        if not action.option_strings or action.dest in _NOT_REPEATED:
            continue
        value = given.get(action.dest, action.default)
        if value is None or value == action.default or value == []:
            continue
        if isinstance(value, Path):
            value = str(value)
        words += _words(action, value)
    return words


def resume_command(opts: RunOptions, out: Path) -> str:
    """The command that runs what this run left failed or not run (never the token)."""
    again = sibling(out, "fix.jsonl")
    words = ["gpt4batch", "run", "-i", str(out), "-f", "-o", str(again), *repeated_flags(opts)]
    return shlex.join(words)


def token_note(opts: RunOptions, source: str) -> str:
    """How the pasted command finds the token (`source`: auth_gate.token_source's words)."""
    if opts.access_token:
        flags = {flag for action in build_parser()._actions for flag in action.option_strings}
        other = " or --access-token-file" if "--access-token-file" in flags else ""
        return (
            "the token was given with --access-token, which is not repeated: add it, or "
            f"give it in GPT4BATCH_ACCESS_TOKEN{other}"
        )
    return f"the token comes from {source}, as in this run"
