"""Command line: one `gpt4batch` program with a sub-command per service."""
