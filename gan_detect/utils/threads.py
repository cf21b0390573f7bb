"""CPU thread defaults, applied once at process start (``configure_threads``).

Why: on a machine shared with other CPU-bound processes, torch's OpenMP pool (GNU libgomp on
Linux wheels) spin-waits between parallel regions by default: a thread that finishes its slice
keeps a core busy waiting for the others, which are descheduled by the competing process, so a
run burns several times its idle CPU time. Sleeping at once (``OMP_WAIT_POLICY=PASSIVE``) has
its own price on an idle machine: every wake-up is a futex call, which many small ops pay.

So the default bounds the spinning: ``GOMP_SPINCOUNT=3000`` (libgomp spins ~3 k iterations, then
sleeps; its own default is 300 k), a middle way between the two. The measurements behind it
(idle and loaded demo runs, the real-data experiment, a convolution loop, under each policy)
are in benchmarks/README.md, taken with ``benchmarks/benchmark.py --bench under_load``. On a heavily shared node
export ``OMP_WAIT_POLICY=PASSIVE``; on a machine of your own, ``GOMP_SPINCOUNT=300000``.
The intra-op thread count is set only when asked (``--threads N`` / ``$GAN_DETECT_THREADS``),
since Lightning divides the cores among CPU DDP processes only while ``OMP_NUM_THREADS`` is
unset. (In a container with a CPU quota, which torch does not see, pass ``available_cores()``.)
The wait policy and spin count are read by libgomp when torch loads, so call this before
``import torch`` (the CLI does, before dispatching a command); afterwards only the thread count
can still change. A variable the user already exported (``OMP_WAIT_POLICY``,
``GOMP_SPINCOUNT``, ``OMP_NUM_THREADS``) is respected.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

ENV_VAR = "GAN_DETECT_THREADS"
# libgomp spin iterations before an idle thread sleeps (its own default: 300000).
DEFAULT_SPINCOUNT = "3000"


def available_cores() -> int:
    """Cores this process may run on: CPU affinity, capped by a cgroup v2 ``cpu.max`` quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def _positive_int(value: str, source: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{source}: expected a positive integer number of threads, got {value!r}")
    return n


def resolve_threads(n: int | None = None) -> int:
    """The intra-op thread count: ``n``, else ``$GAN_DETECT_THREADS``, else ``$OMP_NUM_THREADS``,
    else ``available_cores()``.

    Raises:
        ValueError: naming the option or variable whose value is not a positive integer.
    """
    if n is not None:
        return _positive_int(str(n), "--threads")
    for var in (ENV_VAR, "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value:
            return _positive_int(value, var)
    return available_cores()


def configure_threads(n: int | None = None) -> int:
    """Apply the thread defaults (see the module docstring) and return the thread count.

    Always: ``GOMP_SPINCOUNT=3000`` unless ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` is set
    (read by libgomp when torch loads). With an
    explicit count (``n`` or ``$GAN_DETECT_THREADS``): ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``
    for torch to read, and ``torch.set_num_threads`` if torch is already loaded. Without one the
    count is left to torch and Lightning (whose CPU DDP divides the cores among its processes
    only while ``OMP_NUM_THREADS`` is unset); the return value is then what torch will pick.
    Never imports torch itself (``gan-detect wider-eval`` stays light).
    """
    if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
        # Spin briefly, then sleep (module docstring); a user's own choice is left alone.
        os.environ["GOMP_SPINCOUNT"] = DEFAULT_SPINCOUNT
    if n is None and not os.environ.get(ENV_VAR, "").strip():
        # Nothing asked: do not parse OMP_NUM_THREADS (OpenMP also allows lists like "4,2").
        return available_cores()
    threads = resolve_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    return threads


__all__ = [
    "DEFAULT_SPINCOUNT",
    "ENV_VAR",
    "available_cores",
    "configure_threads",
    "resolve_threads",
]
