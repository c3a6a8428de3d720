"""ingest: validate a JSONL batch and publish one AskMessage per record."""
