"""What a newcomer reads: `gpt4batch --help`, every command's `--help`, and the usage errors."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata

import pytest

from gpt4batch.cli.main import COMMANDS, GROUPS, main
from gpt4batch.cli.run.options import ORIGINAL_ALIASES

# Every command and sub-command with options of its own.
SUBCOMMANDS = {"dead": ("list", "replay"), "stack": ("up", "down")}
HELP_COMMANDS = [
    *[[name] for name in COMMANDS if name not in SUBCOMMANDS],
    *[[name, sub] for name, subs in SUBCOMMANDS.items() for sub in subs],
]

_ENTRY = re.compile(r"^  (-\S.*)$")
_TAKES_VALUE = re.compile(r"(^|, )--?[\w-]+ (\S+)|\[BOOL\]|\{")


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code in (0, None)
    return capsys.readouterr().out


def _full_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    text = _help([*argv, "--help"], capsys)
    return _help([*argv, "--help-all"], capsys) if "--help-all" in text else text


def option_entries(text: str) -> list[str]:
    """Each option of a help text: its invocation and its help, on one line."""
    entries: list[str] = []
    for line in text.split("\n\n", 1)[1].splitlines():  # after the usage
        if _ENTRY.match(line):
            entries.append(line.strip())
        elif entries and entries[-1] and line.startswith("    ") and line.strip():
            entries[-1] += " " + line.strip()
        elif not line.strip() or not line.startswith(" "):
            entries.append("")  # a blank line or a heading ends the entry
    return [e for e in entries if e]


@pytest.mark.parametrize("argv", HELP_COMMANDS, ids=" ".join)
def test_every_option_with_a_value_shows_its_default_or_what_unset_means(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    text = _full_help(argv, capsys)
    entries = [e for e in option_entries(text) if _TAKES_VALUE.search(e.split("  ")[0])]
    assert entries, text
    silent = [e for e in entries if not re.search(r"default|unset|required", e, re.I)]
    assert silent == []


@pytest.mark.parametrize("argv", HELP_COMMANDS, ids=" ".join)
def test_no_help_names_a_python_class(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    text = _full_help(argv, capsys)
    assert not re.search(r"\b[A-Z][a-z]+Settings\b", text), text
    assert "give false to turn off" not in text


def test_run_help_is_short_and_starts_with_the_originals_flags(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    text = _help(["run", "--help"], capsys)
    assert len(text.splitlines()) <= 80, text
    entries = option_entries(text)
    firsts = [e.split(",")[0].split()[0] for e in entries]
    originals = ["-i", "-o", *(s.split("/")[0] for s in ORIGINAL_ALIASES), "-f", "-d", "-r", "-v"]
    originals.append("-n")
    assert firsts[1 : 1 + len(originals)] == originals  # after -h
    # Every section has a title a user understands; the tuning is behind --help-all.
    assert "--conversation-deadline" not in text
    assert "--help-all" in text
    for default in ("--base-url", "--tier", "--access-token", "--nsqd-tcp-address"):
        (entry,) = [e for e in entries if e.startswith(default)]
        assert re.search(r"\((default|unset): (?!none)", entry), entry


def test_run_help_all_shows_the_rest_with_runs_own_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = _help(["run", "--help-all"], capsys)
    (deadline,) = [e for e in option_entries(text) if e.startswith("--conversation-deadline")]
    assert "none in this process" in deadline  # caller_settings: 0 without -n
    assert "--feed-topic" in text


def test_boolean_flags_say_plainly_how_to_turn_them_off(
    capsys: pytest.CaptureFixture[str],
) -> None:
    entries = option_entries(_help(["run", "--help"], capsys))
    (rdb,) = [e for e in entries if e.startswith("-r,")]
    assert "(default: on; -r=false turns it off)" in rdb
    (fix,) = [e for e in entries if e.startswith("-f,")]
    assert "(default: off)" in fix


def test_a_mistyped_long_flag_gets_a_suggestion_and_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "--qsp", "3"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --qsp 3; did you mean --qps?" in err
    assert len(err.strip().splitlines()) == 2  # the error and the pointer to --help


def test_a_mistyped_command_gets_a_suggestion_and_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["rnu"]) == 2
    assert "unknown command 'rnu'; did you mean 'run'?" in capsys.readouterr().err
    assert main(["zzzzzz"]) == 2
    assert "did you mean" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["dead", "lst"], "gpt4batch dead: unknown command 'lst'; did you mean 'list'?"),
        (["stack", "upp"], "gpt4batch stack: unknown command 'upp'; did you mean 'up'?"),
        (["stack", "zzzzzz"], "gpt4batch stack: unknown command 'zzzzzz'"),
    ],
)
def test_a_mistyped_sub_command_gets_the_commands_suggestion_and_exit_2(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 23: `dead lst` got argparse's list of choices, not "did you mean"."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [said, f"  (see `gpt4batch {argv[0]} --help`)"]
    assert "choose from" not in err[0]


def test_commands_are_grouped_and_each_listed_once(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for title in GROUPS:
        assert f"\n{title}:\n" in text
    listed = re.findall(r"^  ([a-z-]+)  ", text, re.M)
    assert sorted(listed) == sorted(COMMANDS)
    services = text.split("services")[1].split("operations:")[0]
    assert re.search(r"^  caller ", services, re.M)
    assert not re.search(r"^  run ", services, re.M)


def test_version_is_the_installed_one() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gpt4batch.cli", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"gpt4batch {metadata.version('gpt4batch')}"
