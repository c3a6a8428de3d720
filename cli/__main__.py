from gpt4batch.cli.main import main

raise SystemExit(main())
