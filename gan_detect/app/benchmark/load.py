"""Whole-process benchmarks: CPU time of a workload idle vs next to busy loops, per OpenMP wait
policy (``under_load``), and one experiment command of two source trees back to back, wall and
CPU seconds per stage (``old_vs_new``)."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gan_detect.app.benchmark.common import Recorder

# A fixed amount of convolution work (G-sized 3x3 convs) through the CLI's thread defaults.
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

# The real WIDER experiment's GAN training step (the ``experiment`` size: HR 32 px, G 16 ch /
# 2 blocks, D = MobileNetV2, batch 32, channels-last as it trains), a fixed number of steps.
TRAIN_CODE = """
import sys
from gan_detect.utils.threads import configure_threads
configure_threads(int(sys.argv[1]) or None)  # 0: the defaults
import torch
from gan_detect.app.benchmark.common import adam_pair, build_from_raw, plain_step, raw_config, smooth_rois
v = build_from_raw(raw_config("tiny_face", "experiment", 32), 0).train()
v.to(memory_format=torch.channels_last)
og, od = adam_pair(v, 1e-3, 1e-4)
b = smooth_rois(32, hr_size=32, num_classes=1, seed=0)
for _ in range(int(sys.argv[2])):
    plain_step(v, og, od, b)
"""


def _run_once(cmd: list[str], env: dict[str, str], competitors: int) -> dict[str, float]:
    """Wall and CPU seconds of ``cmd`` (a child; ``wait4`` gives its own CPU time, not the
    competitors') with ``competitors`` ``while True: pass`` processes running beside it."""
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


def run_under_load(args: argparse.Namespace, rec: Recorder) -> None:
    """``under_load``: per ``--wait-policies`` entry (``default``: ``gan_detect.utils.threads``
    decides; an ``OMP_WAIT_POLICY`` value; ``spin=N``: ``GOMP_SPINCOUNT``, 300000 being
    libgomp's own default) the workload idle and with ``--competitors`` busy loops; target:
    loaded / idle CPU seconds <= 1.5 with the default."""
    with tempfile.TemporaryDirectory() as tmp:
        if args.workload == "demo":
            cmd = [sys.executable, "-m", "gan_detect"]
            cmd += ["--threads", str(args.threads)] if args.threads else []
            cmd += ["demo", "--quick", "--out", str(Path(tmp) / "demo")]
        elif args.workload == "train":
            cmd = [sys.executable, "-c", TRAIN_CODE, str(args.threads or 0), str(args.rounds)]
        else:
            cmd = [sys.executable, "-c", CONV_CODE, str(args.threads or 0), str(args.rounds)]
        for policy in args.wait_policies:
            env = {**os.environ, "WANDB_MODE": "disabled"}
            for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT"):
                env.pop(k, None)
            if policy.startswith("spin="):
                env["GOMP_SPINCOUNT"] = policy.split("=", 1)[1]
            elif policy != "default":
                env["OMP_WAIT_POLICY"] = policy
            idle = _run_once(cmd, env, 0)
            loaded = _run_once(cmd, env, args.competitors)
            rec.emit(
                {
                    "workload": args.workload,
                    "steps": args.rounds,
                    "wait_policy": policy,
                    "competitors": args.competitors,
                    "idle": idle,
                    "loaded": loaded,
                    "cpu_ratio": round(loaded["cpu_s"] / idle["cpu_s"], 2),
                    "wall_ratio": round(loaded["wall_s"] / idle["wall_s"], 2),
                    "target_cpu_ratio": 1.5,
                }
            )


STAGES = ("proposals", "mining", "training", "evaluation", "report")
# (pattern, stage it starts, only from these stages (None: any)), tried in order on every printed
# line or progress-bar refresh. The first two are the experiment runner's lines, the next two the
# earlier script's. A ROI store line ends mining only: the runner's diagnostics (report stage)
# reopen the val store too.
EVENTS: list[tuple[re.Pattern[str], str, tuple[str, ...] | None]] = [
    (re.compile(r"^intervals, diagnostics and report"), "report", None),
    (re.compile(r"^evaluation: \d+ val images"), "evaluation", None),
    (re.compile(r"^evaluate:.*100%"), "report", None),
    (re.compile(r"^evaluate:"), "evaluation", None),
    (re.compile(r"^mining ROIs"), "mining", None),
    (re.compile(r"^(built|reusing) ROI store at .*val_rois"), "training", ("mining",)),
    (re.compile(r"^(seed \d+: row|training row) "), "training", None),
    (re.compile(r"^proposals"), "proposals", None),
]


def next_stage(line: str, stage: str) -> str | None:
    """The stage a printed ``line`` starts when the command is in ``stage`` (None: no change)."""
    for pat, new, src in EVENTS:
        if pat.search(line) and (src is None or stage in src):
            return new
    return None


DEFAULT_COMMAND = (
    "python -m gan_detect experiment run {tree}/experiments/real_wider.yaml --out {out}"
)


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (all its threads) so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _commit(tree: Path) -> str:
    res = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return res.stdout.strip() or "unknown"


def hard_aps(results: dict[str, Any]) -> dict[str, float]:
    """Method -> hard AP (%) from a run's ``results.json`` (either table layout, seed 0)."""
    table = results.get("table") or results.get("methods") or {}
    out: dict[str, float] = {}
    for method, row in table.items():
        val = row.get("hard") if isinstance(row, dict) else None
        if isinstance(val, dict):
            val = val.get("mean", (val.get("per_seed") or [None])[0])
        if isinstance(val, int | float):
            out[method] = float(val) * (100.0 if val <= 1.0 else 1.0)
    return out


def _run_side(tree: Path, out: Path, args: argparse.Namespace, log: Path) -> dict[str, Any]:
    """Run the command for one tree (that tree on ``PYTHONPATH``, so it imports its own
    ``gan_detect``); stages are told apart by what it prints, CPU read at each change."""
    env = {**os.environ, "PYTHONPATH": str(tree.resolve()), "PYTHONUNBUFFERED": "1"}
    data = str(Path(args.data).resolve()) if args.data else os.environ.get("GAN_DETECT_DATA", "")
    if data:
        env["GAN_DETECT_DATA"] = data  # the runner's ${data:...} paths
    cmd = shlex.split(args.command.format(tree=tree, out=out, data=data))
    if cmd[0] == "python":
        cmd[0] = sys.executable
    wall, cpu = dict.fromkeys(STAGES, 0.0), dict.fromkeys(STAGES, 0.0)
    stage, t_last, c_last = "proposals", time.perf_counter(), 0.0
    start = t_last
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    buf = b""
    with log.open("wb") as sink:
        while chunk := proc.stdout.read1(65536):  # type: ignore[attr-defined]
            sink.write(chunk)
            *parts, buf = re.split(rb"[\r\n]", buf + chunk)
            for raw in parts:
                line = raw.decode(errors="replace").strip()
                new = next_stage(line, stage)
                if new is None or new == stage:
                    continue
                now, c = time.perf_counter(), _cpu_seconds(proc.pid)
                wall[stage] += now - t_last
                if c is not None:
                    cpu[stage] += c - c_last
                    c_last = c
                stage, t_last = new, now
    _, status, usage = os.wait4(proc.pid, 0)
    now = time.perf_counter()
    wall[stage] += now - t_last
    cpu[stage] += usage.ru_utime + usage.ru_stime - c_last
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{tree}: {' '.join(cmd)} failed; see {log}")
    res = out / "results.json"
    return {
        "tree": str(tree),
        "commit": _commit(tree),
        "wall_s": {k: round(v, 1) for k, v in wall.items()},
        "cpu_s": {k: round(v, 1) for k, v in cpu.items()},
        "total_wall_s": round(now - start, 1),
        "total_cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "hard_ap": hard_aps(json.loads(res.read_text())) if res.is_file() else {},
        "log": str(log),
    }


def run_old_vs_new(args: argparse.Namespace, rec: Recorder) -> None:
    """``old_vs_new``: ``--command`` (``{tree}``, ``{out}``, ``{data}`` filled in) for ``--old``
    then ``--new``, each from an empty output folder under ``--run-dir``; one line per side and
    one with the new / old ratios per stage."""
    if not args.old:
        raise SystemExit("--bench old_vs_new needs --old TREE (a work tree of the old commit)")
    base = Path(args.run_dir or "runs/old_vs_new")
    base.mkdir(parents=True, exist_ok=True)
    sides = {}
    for side, tree in (("old", Path(args.old)), ("new", Path(args.new))):
        out = (base / side).resolve()
        if out.exists() and any(out.iterdir()):
            raise SystemExit(f"{out} is not empty: each side starts from empty caches")
        sides[side] = _run_side(tree, out, args, base / f"{side}.log")
        rec.emit({"side": side, **sides[side]})
    old, new = sides["old"], sides["new"]
    rec.emit(
        {
            "side": "ratio_new_over_old",
            "wall": {
                s: round(new["wall_s"][s] / old["wall_s"][s], 3)
                for s in STAGES
                if old["wall_s"][s] > 0
            },
            "cpu": {
                s: round(new["cpu_s"][s] / old["cpu_s"][s], 3)
                for s in STAGES
                if old["cpu_s"][s] > 0
            },
            "total_wall": round(new["total_wall_s"] / old["total_wall_s"], 3),
            "total_cpu": round(new["total_cpu_s"] / old["total_cpu_s"], 3),
        }
    )
