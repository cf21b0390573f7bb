"""Small helpers for what the commands print to people: plurals, progress bars, wall time.

No torch, no Lightning: the CLI's light paths use them too.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

# Fallback start time where /proc is not there (macOS, Windows): when this module was imported,
# which the CLI does before any command runs.
_IMPORTED = time.time()


def plural(n: int, noun: str, many: str | None = None) -> str:
    """``"1 box"``, ``"2 boxes"``: ``n`` and the noun in the number it takes (``many`` for an
    irregular plural; else ``noun + "es"`` after s, x, ch, sh and ``noun + "s"`` otherwise)."""
    if n == 1:
        return f"{n} {noun}"
    if many is None:
        many = noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")
    return f"{n} {many}"


def show_progress(requested: bool = True, stream: TextIO | None = None) -> bool:
    """Whether to draw a progress bar on ``stream`` (default ``sys.stderr``, where tqdm writes):
    only when asked and the stream is a terminal. A redirected bar writes every redraw, carriage
    returns included, into the log file."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(requested and isatty is not None and isatty())
    except ValueError:  # a closed stream
        return False


def process_start_time() -> float:
    """When this process started, as ``time.time()``: from ``/proc`` on Linux (interpreter
    start-up and imports included), else when this module was imported."""
    try:
        with open("/proc/self/stat") as f:
            # Field 22 (starttime, clock ticks after boot); the command name (field 2) may hold
            # spaces, so count from the closing parenthesis.
            start_ticks = float(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(float(ln.split()[1]) for ln in f if ln.startswith("btime "))
        started = boot + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration, AttributeError):
        return _IMPORTED
    # btime is whole seconds: never later than what this process has seen itself.
    return min(started, _IMPORTED)


__all__ = ["plural", "process_start_time", "show_progress"]
