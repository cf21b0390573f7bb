"""The real WIDER experiment of two commits, one after the other on this machine: wall and CPU
time per stage (proposals, ROI mining, training, evaluation, intervals + report).

    git worktree add /tmp/old cd05fea
    python benchmarks/old_vs_new.py --old /tmp/old --new . --out runs/old_vs_new [--data ../shared/data]

Each side runs ``python <tree>/experiments/real_wider.py --out OUT/<side>`` with that tree on
``PYTHONPATH`` (so it imports its own ``gan_detect``) and its defaults (one seed), from empty
caches. Stages are told apart by what the script prints (``mining ROIs``, ``built ROI store``,
``seed S: row`` / ``training row``, the ``evaluate`` progress bar); the CPU time of the
process (all threads, ``/proc/<pid>/stat``) is read at every such line, and the rest of it at
exit from ``wait4``. One JSON line per side, then one with the new / old ratios; the hard AP of
the rows both tables hold is printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

try:
    from _common import machine
except ImportError:  # imported as benchmarks.old_vs_new
    from benchmarks._common import machine

STAGES = ("proposals", "mining", "training", "evaluation", "report")
# (pattern, stage it starts), tried in order on every line or progress-bar refresh.
EVENTS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^evaluate:.*100%"), "report"),
    (re.compile(r"^evaluate:"), "evaluation"),
    (re.compile(r"^mining ROIs"), "mining"),
    (re.compile(r"^(built|reusing) ROI store at .*val_rois"), "training"),
    (re.compile(r"^(seed \d+: row|training row) "), "training"),
    (re.compile(r"^proposals"), "proposals"),
]


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (all its threads) so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_side(tree: Path, out: Path, data: str, extra: list[str], log: Path) -> dict[str, Any]:
    """Run one tree's experiment; wall and CPU seconds per stage, and its results.json."""
    env = {**os.environ, "PYTHONPATH": str(tree.resolve()), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(tree / "experiments" / "real_wider.py"), "--out", str(out)]
    cmd += ["--data", data, *extra]
    wall = dict.fromkeys(STAGES, 0.0)
    cpu = dict.fromkeys(STAGES, 0.0)
    stage, t_last, c_last = "proposals", time.perf_counter(), 0.0
    start = t_last
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    buf = b""
    with log.open("wb") as sink:
        while chunk := proc.stdout.read1(65536):  # type: ignore[attr-defined]
            sink.write(chunk)
            buf += chunk
            *parts, buf = re.split(rb"[\r\n]", buf)
            for raw in parts:
                line = raw.decode(errors="replace").strip()
                new = next((s for pat, s in EVENTS if pat.search(line)), None)
                if new is None or new == stage:
                    continue
                now, c = time.perf_counter(), _cpu_seconds(proc.pid)
                wall[stage] += now - t_last
                if c is not None:
                    cpu[stage] += c - c_last
                    c_last = c
                stage, t_last = new, now
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    now = time.perf_counter()
    wall[stage] += now - t_last
    cpu[stage] += usage.ru_utime + usage.ru_stime - c_last
    if proc.returncode != 0:
        raise SystemExit(f"{tree}: real_wider.py exited {proc.returncode}; see {log}")
    results = json.loads((out / "results.json").read_text())
    return {
        "tree": str(tree),
        "commit": _commit(tree),
        "wall_s": wall,
        "cpu_s": cpu,
        "total_wall_s": now - start,
        "total_cpu_s": usage.ru_utime + usage.ru_stime,
        "hard_ap": hard_aps(results),
        "log": str(log),
    }


def _commit(tree: Path) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def hard_aps(results: dict[str, Any]) -> dict[str, float]:
    """Method -> official hard AP (%) from either version's ``results.json`` (seed 0)."""
    table = results.get("table") or results.get("methods") or {}
    out: dict[str, float] = {}
    for method, row in table.items():
        if not isinstance(row, dict):
            continue
        val = row.get("hard")
        if isinstance(val, dict):
            val = val.get("mean", (val.get("per_seed") or [None])[0])
        if isinstance(val, (int, float)):
            out[method] = float(val) * (100.0 if val <= 1.0 else 1.0)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", type=Path, required=True, help="work tree of the old commit")
    ap.add_argument("--new", type=Path, default=Path("."), help="work tree of the new commit")
    ap.add_argument("--out", type=Path, default=Path("runs/old_vs_new"))
    ap.add_argument("--data", default=os.environ.get("GAN_DETECT_DATA", "../shared/data"))
    ap.add_argument("--new-args", default="", help="extra arguments for the new script")
    ns = ap.parse_args(argv)
    ns.out.mkdir(parents=True, exist_ok=True)
    data = str(Path(ns.data).resolve())
    sides = {}
    for side, tree, extra in (
        ("old", ns.old, []),
        ("new", ns.new, ns.new_args.split()),
    ):
        out = (ns.out / side).resolve()
        if out.exists() and any(out.iterdir()):
            raise SystemExit(f"{out} is not empty: each side starts from empty caches")
        sides[side] = run_side(tree, out, data, extra, ns.out / f"{side}.log")
        print(json.dumps({"bench": "old_vs_new", "side": side, **sides[side]}), flush=True)
    old, new = sides["old"], sides["new"]
    ratio = {
        "wall": {s: new["wall_s"][s] / old["wall_s"][s] for s in STAGES if old["wall_s"][s] > 0},
        "cpu": {s: new["cpu_s"][s] / old["cpu_s"][s] for s in STAGES if old["cpu_s"][s] > 0},
        "total_wall": new["total_wall_s"] / old["total_wall_s"],
        "total_cpu": new["total_cpu_s"] / old["total_cpu_s"],
    }
    print(json.dumps({"bench": "old_vs_new", "ratio_new_over_old": ratio, "machine": machine()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
