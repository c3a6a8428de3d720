"""Shared building blocks of the gpt4batch services: messages, settings, bus, logging, metrics."""

if __name__ != "gpt4batch.common":  # e.g. `import common` from the repository root (issue 20)
    raise ImportError(
        f"import gpt4batch.common, not {__name__}: under a second name every module of the "
        "package would load a second time (two copies of each class and metric)"
    )
