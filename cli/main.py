"""`gpt4batch <command>`: one program, a sub-command per service and tool.

Each command lives in its own module with a `main(argv) -> int`; it is only
imported when chosen, so `gpt4batch sink` never loads the upstream clients.
"""

from __future__ import annotations

import gc
import importlib
import sys
from collections.abc import Sequence
from importlib import metadata
from types import ModuleType

from gpt4batch.common import cli_help

# command → (module with `main(argv) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("gpt4batch.cli.run", "run a whole batch in one command (the original batchsvc)"),
    "ingest": ("gpt4batch.services.ingest.cli", "validate a JSONL file and publish its records"),
    "caller": ("gpt4batch.services.caller.cli", "run conversations against the upstream"),
    "downloader": ("gpt4batch.services.downloader.cli", "fetch files the model produced"),
    "sink": ("gpt4batch.services.sink.cli", "append results durably to the output"),
    "reconcile": (
        "gpt4batch.cli.reconcile",
        "republish exactly what a batch still owes (after nsqd lost messages)",
    ),
    "gateway": ("gpt4batch.services.gateway.cli", "OpenAI Batch API (files, batches) for the SDK"),
    "mock-upstream": (
        "gpt4batch.services.mock_upstream.cli",
        "built-in simulator of every upstream (dry runs)",
    ),
    "auth": ("gpt4batch.cli.auth", "get an access token and store it (the original authsvc)"),
    "demo": ("gpt4batch.cli.demo", "run the bundled example against the simulator"),
    "export": ("gpt4batch.cli.export", "an output as text, CSV or Markdown, one row per ask"),
    "dead": ("gpt4batch.cli.dead", "list or replay dead letters without losing them"),
    "stack": ("gpt4batch.cli.stack", "start the compose topology as local processes"),
}
ALIASES = {"batchsvc": "run", "authsvc": "auth"}

#: How `gpt4batch --help` groups the commands; one not named here is listed first.
GROUPS: dict[str, tuple[str, ...]] = {
    "run and tools": ("run", "demo", "auth", "export"),
    "services (long-running, over NSQ)": (
        "ingest",
        "caller",
        "downloader",
        "sink",
        "gateway",
        "mock-upstream",
    ),
    "operations": ("stack", "dead", "reconcile"),
}


def version() -> str:
    try:
        return metadata.version("gpt4batch")
    except metadata.PackageNotFoundError:  # run from a tree that was never installed
        return "unknown (not installed)"


def grouped_commands() -> dict[str, list[str]]:
    """Every command under its group's title, in GROUPS order."""
    placed = {name for names in GROUPS.values() for name in names}
    first = next(iter(GROUPS))
    groups = {title: [n for n in names if n in COMMANDS] for title, names in GROUPS.items()}
    groups[first] += [name for name in COMMANDS if name not in placed]
    return groups


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: gpt4batch <command> [options]   (gpt4batch <command> --help)"]
    for title, names in grouped_commands().items():
        lines += ["", f"{title}:"]
        lines += [f"  {name:<{width}}  {COMMANDS[name][1]}" for name in names]
    lines += ["", "aliases: " + ", ".join(f"{a} = {c}" for a, c in ALIASES.items())]
    lines += ["--version: the installed version; docs: README.md and docs/ in the repository"]
    return "\n".join(lines)


def import_command(name: str, *, freeze: bool = False) -> ModuleType:
    """A command's module, imported with the cyclic garbage collector paused: the imports
    build what lives as long as the process (modules, classes, pydantic schemas), which
    ~130 collections scanned again and again as it grew (~50 ms of a `run`'s start).
    `freeze` (this process is the command): later collections skip it too, as
    common/service.steady_gc does once the command runs; not in a caller's process."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return importlib.import_module(name)
    finally:
        if freeze:
            gc.freeze()
        if enabled:
            gc.enable()


def unknown_command(word: str) -> str:
    return cli_help.unknown_command("gpt4batch", word, [*COMMANDS, *ALIASES])


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    if args[0] in ("-V", "--version", "version"):
        print(f"gpt4batch {version()}")
        return 0
    command = ALIASES.get(args[0], args[0])
    if command not in COMMANDS:
        print(unknown_command(args[0]), file=sys.stderr)
        return 2
    # argv None: the program itself (a test passes argv and keeps its collector as it was).
    module = import_command(COMMANDS[command][0], freeze=argv is None)
    return int(module.main(args[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
