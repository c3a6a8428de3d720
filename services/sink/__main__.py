"""`python -m gpt4batch.services.sink`."""

from gpt4batch.services.sink.cli import main

raise SystemExit(main())
