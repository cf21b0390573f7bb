"""Quiet Lightning by default: a user sees progress bars, our stage headers and where results
went, not Lightning's tips, hardware lines, model summaries and known harmless warnings.

``gan-detect --verbose ...`` or ``GAN_DETECT_VERBOSE=1`` restores all of it. Only ``logging`` and
``warnings`` are touched (no torch import), so the CLI can call this before parsing.
"""

from __future__ import annotations

import logging
import os
import warnings

VERBOSE_ENV = "GAN_DETECT_VERBOSE"

# Loggers whose INFO lines are Lightning chatter: "💡 Tip: ... litlogger", "`Trainer(limit_*=1.0)`
# was configured ...", "GPU available / TPU available", "Seed set to", CUDA_VISIBLE_DEVICES.
_CHATTY_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.fabric.utilities.seed",
    "lightning.pytorch.accelerators.cuda",
)

# Known messages that say nothing actionable to a user of this package.
_HARMLESS_WARNINGS = (
    r".*LeafSpec.* is deprecated",  # torch >= 2.9 deprecates what Lightning's _pytree still uses
    r"The number of training batches .* is smaller than the logging interval",  # small demo data
)


def verbose() -> bool:
    """True when ``GAN_DETECT_VERBOSE`` is set to anything but ``""`` / ``0``."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet_lightning() -> None:
    """Silence Lightning's chatter unless verbose; safe to call repeatedly."""
    if verbose():
        for name in _CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
        return
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in _HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
