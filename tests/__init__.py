"""The tests, one folder per package folder (``gan_detect/<name>/`` -> ``tests/<name>/``) and
``integration/`` for end-to-end ones; shared helpers (``_synth.py``) and ``fixtures/`` here."""
