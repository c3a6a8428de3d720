"""`python -m gpt4batch.services.ingest`."""

from gpt4batch.services.ingest.cli import main

raise SystemExit(main())
