"""The application: CLI, demo, report, the command runners and the benchmark tool (the only code
that prints for people)."""
