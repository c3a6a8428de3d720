"""caller: run each conversation against the upstream."""
