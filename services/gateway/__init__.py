"""The OpenAI Batch API gateway: `files` and `batches` endpoints in front of the pipeline."""
