"""A killed experiment row continues from its last checkpoint when the experiment is rerun."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import Callback

from gan_detect.config import PRESETS


class CtrlCInEpoch1(Callback):
    """Ctrl-C in the middle of the second epoch (as a kill of the experiment would land)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # type: ignore[no-untyped-def]
        if trainer.current_epoch == 1 and batch_idx == 1:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_a_killed_row_continues_from_its_checkpoint(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from gan_detect.config.validate import to_experiment_config
    from gan_detect.data.synthetic import write_synthetic_faces
    from gan_detect.train.callbacks import build_callbacks
    from gan_detect.train.fit import FitInterrupted, fit

    data = tmp_path / "faces"
    write_synthetic_faces(data, num_train=8, num_val=4, seed=0)
    run = tmp_path / "runs" / "gan"
    raw = OmegaConf.to_container(
        OmegaConf.merge(
            OmegaConf.load(PRESETS / "tiny_face_wider.yaml"),
            OmegaConf.load(PRESETS / "smoke.yaml"),
            {
                "output_dir": str(run),
                "data": {"root": str(data), "cache_dir": str(tmp_path / "cache"), "batch_size": 8},
                "trainer": {"max_epochs": 3, "enable_progress_bar": False},
                "logger": {"kind": "csv"},
            },
        ),
        resolve=True,
    )
    assert isinstance(raw, dict)
    cfg = to_experiment_config(raw)
    with pytest.raises(FitInterrupted):
        fit(cfg, None, callbacks=[*build_callbacks(cfg), CtrlCInEpoch1()])
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert not (run / "done.json").exists()

    from gan_detect.experiment import rows

    trained = rows.train_row(raw)  # what a rerun of the experiment does for this row
    done = json.loads((run / "done.json").read_text())
    assert done["resumed_from"] is not None and done["resumed_from"].endswith(".ckpt")
    assert trained.variant.run_config is not None
    # Every epoch logged once: no duplicated rows from the resumed part.
    with (run / "logs" / "metrics.csv").open() as f:
        steps = [(r["epoch"], r["step"]) for r in csv.DictReader(f) if r.get("train/loss_d")]
    assert len(steps) == len(set(steps))
    assert max(int(e) for e, _ in steps) == 2
    # A second rerun finds the row finished: it loads, trains nothing.
    again = rows.train_row(raw)
    assert json.loads((run / "done.json").read_text()) == done
    assert again.run_dir == run
    # What the run used is recorded beside it.
    modes = json.loads((run / "run_modes.json").read_text())
    assert modes["precision"] == "32-true" and modes["memory_format"] == "contiguous"

    # A changed setting never reuses the finished row: it is trained again from scratch.
    raw["trainer"]["max_epochs"] = 2
    assert rows.changed_settings(to_experiment_config(raw), run) == ["trainer.max_epochs"]
    rows.train_row(raw)
    redone = json.loads((run / "done.json").read_text())
    assert redone["resumed_from"] is None
    with (run / "logs" / "metrics.csv").open() as f:
        epochs = {int(r["epoch"]) for r in csv.DictReader(f) if r.get("train/loss_d")}
    assert epochs == {0, 1}
