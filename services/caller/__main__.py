from gpt4batch.services.caller.cli import main

raise SystemExit(main())
