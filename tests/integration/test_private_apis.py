"""The few private names of Lightning, torchmetrics and torchvision the package relies on.

Each is used because no public API does the job (see the comment where it is used); pyproject.toml
caps those libraries below the next minor versions not yet checked. When an upgrade moves one of
these names or changes what we rely on, this file fails first, naming it, instead of a training
run failing later.
"""

from __future__ import annotations

import inspect

import torch


def test_lightning_csv_writer_hooks_we_override() -> None:
    from lightning.fabric.loggers.csv_logs import _ExperimentWriter
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    # train/loggers.py: an appending writer overrides the hook that deletes an old metrics.csv.
    assert issubclass(ExperimentWriter, _ExperimentWriter)
    assert hasattr(_ExperimentWriter, "_check_log_dir_exists")
    assert "metrics_file_path" in inspect.signature(
        _ExperimentWriter.__init__
    ).parameters or hasattr(_ExperimentWriter, "NAME_METRICS_FILE")


def test_lightning_ddp_helpers_the_gan_strategy_calls() -> None:
    from lightning.pytorch.overrides.distributed import _register_ddp_comm_hook, _sync_module_states

    # train/distributed.py: per-submodule DDP wrappers reuse Lightning's comm-hook registration
    # and the rank-0 broadcast of module states.
    assert "model" in inspect.signature(_register_ddp_comm_hook).parameters
    assert len(inspect.signature(_sync_module_states).parameters) == 1


def test_torchmetrics_coco_backend_builds_coco_objects() -> None:
    from torchmetrics.detection import MeanAveragePrecision

    # metrics/coco_map.py: CocoMeanAP evaluates (one coco_evaluator run, tiny included) the COCO
    # objects the parent builds, through its private backend helper.
    m = MeanAveragePrecision(backend="pycocotools")
    backend = m._coco_backend
    assert "average" in inspect.signature(backend._get_coco_datasets).parameters


def test_torchvision_box_coder_round_trips() -> None:
    from torchvision.models.detection._utils import BoxCoder

    # data/roi.py: Fast R-CNN box deltas, exactly as torchvision's detectors encode them.
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    ref = torch.tensor([[10.0, 10.0, 50.0, 40.0]])
    box = torch.tensor([[12.0, 8.0, 55.0, 45.0]])
    deltas = coder.encode_single(box, ref)
    back = coder.decode_single(deltas, ref)
    assert torch.allclose(back, box, atol=1e-4)
