"""`gpt4batch run`: options, the run itself, its journal, progress and finalizer."""

from gpt4batch.cli.run.command import main

__all__ = ["main"]
