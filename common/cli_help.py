"""The `--help` and the usage errors of every `gpt4batch` command.

Every option that takes a value shows its default, or "none" (or what happens
when it is unset); a mistyped long flag gets "did you mean --…"; options of
advanced groups are listed by `--help-all` only, so `--help` stays short.
"""

from __future__ import annotations

import argparse
import difflib
import re
import textwrap
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

_UNRECOGNIZED = re.compile(r"^unrecognized arguments: (.*)$")
_INVALID_CHOICE = re.compile(r"^argument (\S+): invalid choice: '(.*)' \(choose from .*\)$")


def did_you_mean(word: str, candidates: Iterable[str], cutoff: float = 0.75) -> str | None:
    """The candidate closest to a mistyped `word`, if one is close enough (the shared
    `--` of flags counts: short command names need a lower `cutoff`)."""
    found = difflib.get_close_matches(word, list(candidates), n=1, cutoff=cutoff)
    return found[0] if found else None


def unknown_command(prog: str, word: str, commands: Iterable[str]) -> str:
    """The one line for a mistyped command or sub-command, with "did you mean" when one
    is close (`gpt4batch rn`, `gpt4batch dead lst`)."""
    close = did_you_mean(word, commands, cutoff=0.6)
    hint = f"; did you mean {close!r}?" if close else ""
    return f"{prog}: unknown command {word!r}{hint}\n  (see `{prog} --help`)"


def bool_default(flag: str, default: bool) -> str:
    """How the help states the default of a `--flag[=BOOL]` option."""
    return f"(default: on; {flag}=false turns it off)" if default else "(default: off)"


def _says_default(text: str) -> bool:
    lowered = text.lower()
    return "default" in lowered or "unset" in lowered or "(required)" in lowered


class DefaultsFormatter(argparse.HelpFormatter):
    """Every option that takes a value ends its help with its default, "none" when it
    has none, or "(required)" — unless the help already says what happens when unset."""

    def __init__(self, prog: str, **kwargs: Any) -> None:
        kwargs.setdefault("max_help_position", 30)
        super().__init__(prog, **kwargs)

    def _split_lines(self, text: str, width: int) -> list[str]:
        """Wrapped at spaces only: `--lookupd-http-address` never splits at its hyphens."""
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        """`-i, --in, --input FILE`: the value's name once, not after every spelling."""
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        value = self._format_args(action, self._get_default_metavar_for_optional(action))
        return ", ".join(action.option_strings) + " " + value

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if not action.option_strings or action.nargs == 0 or _says_default(text):
            return text
        if action.required:
            return text + " (required)"
        default = action.default
        if isinstance(default, bool) and action.nargs == "?":
            return f"{text} {bool_default(_shortest_name(action), default)}"
        if default in (None, argparse.SUPPRESS, [], ""):
            return text + " (default: none)"
        return text + " (default: %(default)s)"


def _shortest_name(action: argparse.Action) -> str:
    return min(action.option_strings, key=len)


class _HelpAllAction(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        assert isinstance(parser, CliParser)
        parser.show_all = True
        parser.print_help()
        parser.exit()


class CliParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and a hint (exit 2), not the usage block;
    every --help shows the defaults; advanced groups only under --help-all."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)
        self.show_all = False
        self._advanced: list[argparse._ArgumentGroup] = []

    def add_argument_group(self, *args: Any, advanced: bool = False, **kwargs: Any) -> Any:
        """`advanced=True`: the group's options are listed by `--help-all` only."""
        group = super().add_argument_group(*args, **kwargs)
        if advanced:
            if not self._advanced:
                self.add_argument(
                    "--help-all", action=_HelpAllAction, help="show every option and exit"
                )
            self._advanced.append(group)
        return group

    def format_help(self) -> str:
        hidden = [] if self.show_all else self._advanced
        formatter = self._get_formatter()
        shown = [a for g in self._action_groups if g not in hidden for a in g._group_actions]
        formatter.add_usage(self.usage, shown, self._mutually_exclusive_groups)
        formatter.add_text(self.description)
        for group in self._action_groups:
            if group in hidden or not group._group_actions:
                continue
            formatter.start_section(group.title)
            formatter.add_text(group.description)
            formatter.add_arguments(group._group_actions)
            formatter.end_section()
        if hidden:
            count = sum(len(g._group_actions) for g in hidden)
            titles = ", ".join(str(g.title).split(" (")[0] for g in hidden)
            formatter.add_text(f"{count} more options ({titles}): {self.prog} --help-all")
        formatter.add_text(self.epilog)
        return formatter.format_help()

    def error(self, message: str) -> NoReturn:
        wrong = _INVALID_CHOICE.match(message)
        if wrong:  # a mistyped sub-command: said as for a mistyped command
            for action in self._actions:
                names = action.metavar or action.dest
                if isinstance(action, argparse._SubParsersAction) and wrong.group(1) == names:
                    line = unknown_command(self.prog, wrong.group(2), action.choices)
                    self.exit(2, line + "\n")
        hint = self._suggestion(message)
        self.exit(2, f"{self.prog}: error: {message}{hint}\n  (see `{self.prog} --help`)\n")

    def _suggestion(self, message: str) -> str:
        match = _UNRECOGNIZED.match(message)
        if not match:
            return ""
        longs = [s for s in self._option_string_actions if s.startswith("--")]
        for word in match.group(1).split():
            name = word.split("=", 1)[0]
            if name.startswith("--"):
                close = did_you_mean(name, longs)
                if close:
                    return f"; did you mean {close}?"
        return ""
