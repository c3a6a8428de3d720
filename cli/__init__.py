"""Command line: one `gpt4batch` program with a sub-command per service."""

if __name__ != "gpt4batch.cli":  # e.g. `import cli` from the repository root (issue 20)
    raise ImportError(
        f"import gpt4batch.cli, not {__name__}: under a second name every module of the "
        "package would load a second time (two copies of each class and metric)"
    )
