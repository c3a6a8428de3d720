"""`python -m gpt4batch.services.mock_upstream`."""

import sys

from gpt4batch.services.mock_upstream.cli import main

sys.exit(main())
