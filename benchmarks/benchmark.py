"""The benchmark tool: ``python benchmarks/benchmark.py --bench KIND [options]`` (``--help``).

One entry after timm's ``benchmark.py``; the kinds live in ``gan_detect.app.benchmark``
(also ``python -m gan_detect.app.benchmark``). Results: one JSON line per measurement,
``--out benchmarks/results/<kind>.jsonl``; ``--table FILE...`` renders markdown tables.
"""

import sys

from gan_detect.app.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
