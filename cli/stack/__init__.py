"""`gpt4batch stack`: the compose topology as local processes (plan, processes, command)."""

from gpt4batch.cli.stack.command import main

__all__ = ["main"]
