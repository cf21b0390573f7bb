"""Write tests/data/old_layout_gan.ckpt with the flat layout (run in a checkout of cd05fea).

    cd <checkout at cd05fea> && PYTHONPATH=$PWD python <this file> OUT.ckpt

A tiny tiny_face GAN (tiny_face_wider.yaml + smoke.yaml with an 8-channel G and the
``old_layout_tiny_resnet`` trunk of old_layout_trunk.py as D) after one training batch on
in-memory ROI pairs (that checkout's tests/_synth.py), saved by that commit's own Trainer factory.
Prints D's and G's outputs on fixed inputs, which tests/test_old_checkpoints.py expects.
"""

from __future__ import annotations

# The flat modules below exist only in the old checkout; ruff cannot place them among the
# package's own imports.
# ruff: noqa: I001

import json
import sys
import tempfile
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path.cwd() / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import old_layout_trunk  # noqa: E402
from _synth import PairDataset, roi_batch  # noqa: E402

from gan_detect.configload import load_config  # noqa: E402
from gan_detect.data.batch import RoiBatch  # noqa: E402
from gan_detect.engine import GANDetectionModule  # noqa: E402
from gan_detect.schema import to_container  # noqa: E402
from gan_detect.training import build_trainer  # noqa: E402


def fixed_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """HR (2, 3, 32, 32) and LR (2, 3, 8, 8) in [-1, 1], from arithmetic only (no RNG)."""
    hr = torch.sin(torch.arange(2 * 3 * 32 * 32, dtype=torch.float32) * 0.37).reshape(2, 3, 32, 32)
    lr = torch.cos(torch.arange(2 * 3 * 8 * 8, dtype=torch.float32) * 0.53).reshape(2, 3, 8, 8)
    return hr, lr


def main(out: str) -> None:
    torch.set_num_threads(1)
    L.seed_everything(0)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            ["experiments/tiny_face_wider.yaml", "experiments/smoke.yaml"],
            [
                "data.root=unused", f"output_dir={tmp}/run", "data.batch_size=8",
                "variant.g_channels=8", "variant.g_res_blocks=1",
                "variant.g_upsample_channels=16", "variant.g_refine_channels=16",
                f"variant.backbone={old_layout_trunk.NAME}",
                "trainer.max_epochs=1", "trainer.limit_train_batches=1",
                "trainer.limit_val_batches=0", "trainer.enable_progress_bar=false",
                "logger.kind=none",
            ],
        )  # fmt: skip
        module = GANDetectionModule(to_container(cfg))
        loader = DataLoader(
            PairDataset(roi_batch(8, 32, seed=0)), batch_size=8, collate_fn=RoiBatch.collate
        )
        trainer = build_trainer(cfg, enable_checkpointing=False, callbacks=[])
        trainer.fit(module, loader)
        trainer.save_checkpoint(out)
    module.eval()
    hr, lr = fixed_inputs()
    with torch.no_grad():
        d = module.variant.discriminator(hr)
        sr = module.variant.generator(lr).sr
    print(
        json.dumps(
            {
                "adv_logits": d.adv_logits.tolist(),
                "cls_logits": d.cls_logits.tolist(),
                "box_deltas": None if d.box_deltas is None else d.box_deltas.tolist(),
                "sr_sum": float(sr.double().sum()),
                "sr_abs_sum": float(sr.double().abs().sum()),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
