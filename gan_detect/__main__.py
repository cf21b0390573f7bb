from gan_detect.cli import main

raise SystemExit(main())
