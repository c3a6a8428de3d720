"""The gpt4batch services; each runs as `python -m gpt4batch.services.<name>`."""

if __name__ != "gpt4batch.services":  # e.g. `import services` from the repository root (issue 20)
    raise ImportError(
        f"import gpt4batch.services, not {__name__}: under a second name every module of the "
        "package would load a second time (two copies of each class and metric)"
    )
