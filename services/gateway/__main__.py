"""`python -m gpt4batch.services.gateway`."""

from gpt4batch.services.gateway.cli import main

raise SystemExit(main())
