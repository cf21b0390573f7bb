from gan_detect.app.cli import main

raise SystemExit(main())
