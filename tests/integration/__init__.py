"""End-to-end tests (the demo, every variant through the whole chain, the CLI pipeline, README
blocks, the wheel, failure modes across commands) and whole-package checks (layers, import cycles,
the private APIs of dependencies)."""
