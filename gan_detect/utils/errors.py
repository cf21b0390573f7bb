"""The project's own error for bad user input: the CLI prints it as one line, exit 2.

Every error about what a user gave (a config value, a file, a folder, a checkpoint) derives from
:class:`InputError`; ``gan_detect.app.cli`` catches this class (plus ``OSError`` and Lightning's
``MisconfigurationException``) and nothing broader, so an internal bug (a bare ``ValueError``,
``KeyError``, ...) still shows its traceback.
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """Something the user gave is invalid: the message names the file, folder or config key.

    A ``ValueError`` subclass, so callers that caught ``ValueError`` before still do.
    """
