"""The gpt4batch services; each runs as `python -m gpt4batch.services.<name>`."""
