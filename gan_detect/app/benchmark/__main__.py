"""``python -m gan_detect.app.benchmark``: the benchmark tool (also ``benchmarks/benchmark.py``)."""

from gan_detect.app.benchmark import main

raise SystemExit(main())
