from ssdkit.cli import main

raise SystemExit(main())
