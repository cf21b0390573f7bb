"""W&B sweep files: their command runs the CLI, swept values reach the resolved config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from omegaconf import OmegaConf

from gan_detect.app.cli import load_config
from gan_detect.train.callbacks import WANDB_MAX_METRICS, WandbSummaryCallback
from tests.train.test_distributed import data_overrides, faces, smoke_overrides  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[2]
SWEEPS = sorted((ROOT / "experiments" / "sweeps").glob("*.yaml"))


def _sample(spec: dict) -> object:
    """One value a sweep controller could choose for a parameter spec."""
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        return spec["values"][-1]
    return spec["min"]


def agent_argv(sweep: dict, args: list[str]) -> list[str]:
    """The argv a W&B agent runs: ``command`` with its macros expanded (``${env}`` = env)."""
    out: list[str] = []
    for part in sweep["command"]:
        if part == "${env}":
            out.append("/usr/bin/env")
        elif part == "${args_no_hyphens}":
            out.extend(args)
        else:
            assert "${" not in part, f"unexpanded macro {part}"
            out.append(part)
    return out


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_file_parameters_are_valid_config_keys(path: Path) -> None:
    sweep = yaml.safe_load(path.read_text())
    assert sweep["metric"]["name"] in WANDB_MAX_METRICS and sweep["metric"]["goal"] == "maximize"
    cmd = sweep["command"]
    assert cmd[1:3] == ["gan-detect", "fit"] and cmd[-1] == "${args_no_hyphens}"
    files = [ROOT / c for c in cmd[3:-1]]
    args = [f"{k}={_sample(v)}" for k, v in sweep["parameters"].items()]
    os.environ.setdefault("WANDB_RUN_ID", "abc123")
    cfg = load_config(files, args)  # unknown keys or bad types would raise ConfigError
    assert cfg.logger.kind == "wandb" and cfg.resume == "auto"
    assert cfg.output_dir.endswith(os.environ["WANDB_RUN_ID"])  # one run directory per W&B run
    for k, v in sweep["parameters"].items():
        if "distribution" in v:
            assert OmegaConf.select(OmegaConf.structured(cfg), k) == pytest.approx(v["min"])


def test_agent_command_line_reaches_the_resolved_config(faces: Path, tmp_path: Path) -> None:  # noqa: F811
    """The exact argv an agent builds, run in a subprocess with W&B offline."""
    sweep = yaml.safe_load((ROOT / "experiments" / "sweeps" / "tiny_face.yaml").read_text())
    swept = ["optim.lr_g=0.0003", "variant.adv_weight=0.002"]
    fixed = [f"{k}={v['value']}" for k, v in sweep["parameters"].items() if "value" in v]
    # Test-only pins: tiny nets and generated data first (a small sweep's fixed values), W&B
    # offline (no network here) and a temporary run directory last.
    small = [*smoke_overrides(), *data_overrides(faces, tmp_path), "data.max_train_images=2"]
    local = ["logger.mode=offline", f"output_dir={tmp_path}/run_${{oc.env:WANDB_RUN_ID}}"]
    argv = agent_argv(sweep, [*small, *swept, *fixed, *local])
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_RUN_ID": "sweeprun1",
        "OMP_NUM_THREADS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "WANDB_DIR": str(tmp_path),
    }
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = tmp_path / "run_sweeprun1"
    saved = OmegaConf.load(run / "config.yaml")
    assert saved.optim.lr_g == 0.0003 and saved.variant.adv_weight == 0.002
    assert saved.resume == "auto" and saved.logger.kind == "wandb"
    # One offline W&B run, holding the resolved (nested) config with the swept values.
    runs = list((run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    # The offline run log (protobuf records with JSON values) holds the uploaded config and the
    # metric definitions (summary max) made by WandbSummaryCallback.
    log = next(runs[0].glob("run-*.wandb")).read_bytes()
    assert b'{"lr_g":0.0003,' in log and b'"adv_weight":0.002,' in log
    assert b"val/ap_hard" in log and b"val/map_small" in log
    assert (run / "checkpoints" / "last.ckpt").is_file()


class _FakeExperiment:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def define_metric(self, name: str, summary: str) -> None:
        self.calls.append((name, summary))


@pytest.mark.parametrize("global_zero", [True, False])
def test_wandb_summary_is_max_and_declared_on_rank_zero_only(global_zero: bool) -> None:
    from lightning.pytorch.loggers import WandbLogger

    lg = WandbLogger(mode="disabled")
    fake = _FakeExperiment()
    lg._experiment = fake  # what .experiment returns once the run exists
    trainer = SimpleNamespace(is_global_zero=global_zero, loggers=[lg])
    WandbSummaryCallback().setup(trainer, None, "fit")  # type: ignore[arg-type]
    expected = [("val/ap_hard", "max"), ("val/map_small", "max")] if global_zero else []
    assert fake.calls == expected


def test_wandb_mode_in_the_environment_wins_over_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A preset's ``logger.mode: offline`` once wrote offline runs with WANDB_MODE=disabled: the
    logger passed ``mode=`` to wandb.init, which overrides W&B's own reading of the variable."""
    from _synth import tiny_config

    from gan_detect.config.validate import to_experiment_config
    from gan_detect.train.loggers import build_logger

    over = {"logger.kind": "wandb", "logger.mode": "offline", "output_dir": str(tmp_path)}
    cfg = to_experiment_config(tiny_config("tiny_face", **over))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    logger = build_logger(cfg)
    assert logger._wandb_init["mode"] == "disabled"  # type: ignore[union-attr]
    assert logger.experiment is not None  # type: ignore[union-attr]  # the run: a disabled one
    assert not list(tmp_path.rglob("offline-run-*"))
    monkeypatch.delenv("WANDB_MODE")
    assert build_logger(cfg)._wandb_init["mode"] == "offline"  # type: ignore[union-attr]
