"""The application: CLI, demo, report and the command runners (the only code that prints for people)."""
