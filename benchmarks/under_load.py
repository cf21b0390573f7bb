"""CPU time of a workload idle vs with competing CPU-bound processes (graceful under load).

    python benchmarks/under_load.py                       # gan-detect demo --quick, 1 competitor
    python benchmarks/under_load.py --workload conv       # a fixed conv loop (seconds)
    python benchmarks/under_load.py --workload train      # the real experiment's training step
    python benchmarks/under_load.py --wait-policies default PASSIVE spin=300000   # the choices

Each run is a fresh ``python -m gan_detect ...`` process (so the thread defaults of
``gan_detect.utils.threads`` apply as for a user); its own CPU time comes from ``os.wait4`` (user +
system of that child only, not of the competitors). The competitors are ``while True: pass``
processes started before and killed after the run. ``spin=300000`` (``GOMP_SPINCOUNT``, no wait
policy) is libgomp's own default, the behaviour before ``configure_threads`` existed; ``ACTIVE``
spins without limit. Target: ``cpu_ratio`` (loaded / idle CPU
seconds) <= 1.5 with the default policy. Prints one JSON line per policy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:  # run as a script (benchmarks/ on sys.path) or as a module
    from _common import machine
except ImportError:  # pragma: no cover
    from benchmarks._common import machine

ROOT = Path(__file__).resolve().parents[1]

# A fixed amount of convolution work (G-sized 3x3 convs) run through the CLI's thread defaults.
CONV_CODE = """
import sys
from gan_detect.utils.threads import configure_threads
configure_threads(int(sys.argv[1]) or None)  # 0: the defaults
import torch
x = torch.randn(16, 32, 64, 64)
conv = torch.nn.Conv2d(32, 32, 3, padding=1)
with torch.no_grad():
    for _ in range(int(sys.argv[2])):
        conv(x)
"""


# The real WIDER experiment's GAN training step (experiments/real_wider.py sizes: HR 32 px, G 16
# channels / 2 blocks, D = MobileNetV2, batch 32, channels-last), a fixed number of steps,
# through the thread defaults as the experiment script applies them.
TRAIN_CODE = """
import sys
sys.path.insert(0, sys.argv[3])
from gan_detect.utils.threads import configure_threads
configure_threads(int(sys.argv[1]) or None)  # 0: the defaults
import torch
from _common import smooth_rois
from step_time import plain_step
from train_modes import experiment_raw
from gan_detect.config.validate import to_experiment_config
from gan_detect.variants import build_variant
cfg = to_experiment_config(experiment_raw(32))
torch.manual_seed(0)
v = build_variant(cfg.variant, 1).train()
v.to(memory_format=torch.channels_last)  # as the experiment trains (trainer.channels_last)
og = torch.optim.Adam(v.generator.parameters(), 1e-3)
od = torch.optim.Adam(v.discriminator.parameters(), 1e-4)
b = smooth_rois(32, hr_size=32, num_classes=1, seed=0)
for _ in range(int(sys.argv[2])):
    plain_step(v, og, od, b)
"""


def run_once(cmd: list[str], env: dict[str, str], competitors: int) -> dict[str, float]:
    """Wall and CPU seconds of ``cmd`` (a child process) with ``competitors`` busy loops."""
    busy = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(competitors)
    ]
    try:
        time.sleep(0.5 if busy else 0.0)  # let the competitors reach the run queue
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err}")
    finally:
        for b in busy:
            b.kill()
            b.wait()
    return {"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=["demo", "conv", "train"], default="demo")
    p.add_argument("--train-steps", type=int, default=20)
    p.add_argument("--competitors", type=int, default=1, help="busy-loop processes when loaded")
    p.add_argument("--threads", type=int, default=None, help="--threads of the workload")
    p.add_argument("--conv-steps", type=int, default=150)
    p.add_argument(
        "--wait-policies",
        nargs="+",
        default=["default"],
        help="'default' (gan_detect.utils.threads decides), OMP_WAIT_POLICY values (ACTIVE: spin"
        " forever), or spin=N (GOMP_SPINCOUNT; spin=300000 is libgomp's own default)",
    )
    a = p.parse_args()
    info = machine()
    with tempfile.TemporaryDirectory() as tmp:
        if a.workload == "demo":
            cmd = [sys.executable, "-m", "gan_detect"]
            cmd += ["--threads", str(a.threads)] if a.threads else []
            cmd += ["demo", "--quick", "--out", str(Path(tmp) / "demo")]
        elif a.workload == "train":
            bench = str(Path(__file__).resolve().parent)
            cmd = [sys.executable, "-c", TRAIN_CODE, str(a.threads or 0), str(a.train_steps), bench]
        else:
            cmd = [sys.executable, "-c", CONV_CODE, str(a.threads or 0), str(a.conv_steps)]
        for policy in a.wait_policies:
            env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
            env.pop("OMP_WAIT_POLICY", None)
            env.pop("OMP_NUM_THREADS", None)
            env.pop("GOMP_SPINCOUNT", None)
            if policy.startswith("spin="):  # libgomp's spin-then-sleep with this spin count
                env["GOMP_SPINCOUNT"] = policy.split("=", 1)[1]
            elif policy != "default":
                env["OMP_WAIT_POLICY"] = policy
            idle = run_once(cmd, env, 0)
            loaded = run_once(cmd, env, a.competitors)
            print(
                json.dumps(
                    {
                        "benchmark": "under_load",
                        "workload": a.workload,
                        "wait_policy": policy,
                        "competitors": a.competitors,
                        "threads": a.threads,
                        "idle": idle,
                        "loaded": loaded,
                        "cpu_ratio": round(loaded["cpu_s"] / idle["cpu_s"], 2),
                        "wall_ratio": round(loaded["wall_s"] / idle["wall_s"], 2),
                        "target_cpu_ratio": 1.5,
                        **info,
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
