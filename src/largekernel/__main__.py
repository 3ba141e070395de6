from largekernel.cli import main

raise SystemExit(main())
