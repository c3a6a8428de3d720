"""`python -m gpt4batch.services.downloader`."""

from gpt4batch.services.downloader.cli import main

raise SystemExit(main())
