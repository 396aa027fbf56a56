from poc.cli import main

raise SystemExit(main())
