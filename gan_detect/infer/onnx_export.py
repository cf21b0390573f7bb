"""The re-scorer as ONNX: G then D on LR crops in one graph, checked against PyTorch.

What is exported is the network ``predict`` and the :class:`~gan_detect.infer.pipeline.Pipeline`
run: the eval-mode inference copy of G + D with BatchNorm folded into the convolutions
(:func:`gan_detect.infer.inference.inference_variant`), without channels-last weights (a memory
layout ONNX has no notion of). One graph rather than a G file and a D file: at inference G's
output feeds only D, so one file is one session to load, the SR crops never leave the runtime,
and the runtime may fuse across the boundary; a user who wants SR images trains or evaluates in
PyTorch.

The graph (:class:`RescorerGraph`):

- input ``lr`` (N, 3, h, w) float32 in [-1, 1]: LR crops as
  :func:`gan_detect.data.roi.crop_lr_for_inference` makes them (the proposal squared on its
  longer side, enlarged by ``context``, cropped to ``h * scale`` and down-sampled by ``scale``
  with the antialiased bicubic kernel of ROI mining); N is dynamic, h = w = the run's LR size.
- output ``probs`` (N, K): the face probability (K = 1, a sigmoid of D's one class logit) or the
  (C + 1)-way softmax with index 0 the background (the papers' two head layouts,
  :mod:`gan_detect.variants.common`).
- output ``box_deltas`` (N, 4(C + 1)) class-specific or (N, 4) shared, only where D has a box
  head (SOD-MTGAN): Fast R-CNN deltas (dx, dy, dw, dh), weights (10, 10, 5, 5), relative to the
  squared, context-enlarged crop window of the proposal (:func:`~gan_detect.data.roi.
  decode_roi_deltas`).

Score fusion, class-aware candidates and NMS stay outside the graph: they are a few lines over
these outputs and depend on the detector's scores and labels.

Two exporters: ``dynamo`` (``torch.onnx.export(dynamo=True)``, torch's maintained path, needs
onnxscript) and ``torchscript`` (the older tracer, deprecated by torch; 0.3-1.1 s to export
against dynamo's 15-25 s at the real experiment's size, benchmarks/README.md). The tracer has no ONNX mapping for ``aten::atanh`` (the generator's bicubic skip in
pre-tanh space); it gets one here, to ONNX's own ``Atanh`` op, so the numerics are the same
function, not a rewrite through logarithms.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gan_detect.data.image_io import load_image
from gan_detect.data.roi import BOX_CODER_WEIGHTS, crop_lr_for_inference
from gan_detect.infer.inference import InferenceOptions, inference_variant
from gan_detect.utils.errors import InputError
from gan_detect.variants import GANVariant

__all__ = [
    "DEFAULT_OPSET",
    "DEFAULT_TOLERANCE",
    "EXPORTERS",
    "ONNX_FILE",
    "SIDECAR_FILE",
    "OnnxExport",
    "OnnxMismatchError",
    "RescorerGraph",
    "check_export_options",
    "export_graph",
    "export_rescorer",
    "num_classes",
    "onnx_outputs",
    "onnx_session",
    "real_crops",
    "rescorer_copy",
    "written_opset",
]

ONNX_FILE = "rescorer.onnx"
SIDECAR_FILE = "rescorer.json"
SIDECAR_FORMAT = "gan-detect-onnx/1"
# Opset 18: the dynamo exporter's own; onnxruntime >= 1.14 runs it.
DEFAULT_OPSET = 18
# Max |ONNX - PyTorch| on probabilities and deltas; folding alone moves scores ~1e-6.
DEFAULT_TOLERANCE = 1e-3
EXPORTERS = ("dynamo", "torchscript")
INPUT_NAME = "lr"


class OnnxMismatchError(RuntimeError):
    """onnxruntime's outputs differ from PyTorch's by more than the tolerance (nothing written)."""


class RescorerGraph(nn.Module):
    """G then D as probabilities: ``lr`` (N, 3, h, w) in [-1, 1] -> ``probs`` (N, K) and, with a
    box head, ``box_deltas`` (N, 4K | 4). Wraps (does not copy) ``variant``."""

    def __init__(self, variant: GANVariant) -> None:
        super().__init__()
        self.variant = variant

    def forward(self, lr: Tensor) -> tuple[Tensor, ...]:
        # discriminate_sr, not generator + discriminator: a variant may override it.
        out = self.variant.discriminate_sr(lr)
        logits = out.cls_logits
        probs = torch.sigmoid(logits[:, :1]) if logits.shape[1] == 1 else logits.softmax(dim=1)
        return (probs,) if out.box_deltas is None else (probs, out.box_deltas)


def onnx_outputs(variant: GANVariant) -> list[str]:
    """The graph's output names for ``variant``: ``probs`` [, ``box_deltas``]."""
    has_box = getattr(variant.discriminator, "box_head", None) is not None
    return ["probs", "box_deltas"] if has_box else ["probs"]


def num_classes(variant: GANVariant) -> int:
    """C, the object classes D scores: 1 for a face logit, else its logits less the background."""
    k = int(variant.discriminator.num_cls_logits)
    return 1 if k == 1 else k - 1


def rescorer_copy(variant: GANVariant, probe: Tensor) -> GANVariant:
    """The inference copy ``predict`` runs (BatchNorm folded, checked on ``probe`` (n, 3, h, w)),
    with weights in the default memory format: the network that is exported."""
    opts = InferenceOptions(lr_size=int(probe.shape[-1]), fold_bn=True, channels_last=False)
    return inference_variant(variant.eval(), opts, probe=probe)


@contextmanager
def _atanh_symbolic() -> Iterator[None]:
    """``aten::atanh`` -> ONNX ``Atanh`` (opset >= 9) for the TorchScript exporter, while
    exporting only: the tracer has no mapping of its own, the ONNX op computes the same
    function."""
    from torch.onnx import register_custom_op_symbolic, unregister_custom_op_symbolic

    def atanh(g: Any, x: Any) -> Any:
        return g.op("Atanh", x)

    register_custom_op_symbolic("aten::atanh", atanh, 9)
    try:
        yield
    finally:
        unregister_custom_op_symbolic("aten::atanh", 9)


def export_graph(
    graph: nn.Module,
    example: Tensor,
    path: str | Path,
    output_names: Sequence[str],
    opset: int = DEFAULT_OPSET,
    exporter: str = "dynamo",
) -> Path:
    """Write ``graph`` (one input, N dynamic) as one self-contained ONNX file at ``path``.

    Args:
        example: (n >= 2, 3, h, w) input that fixes h and w (n >= 2: the batch axis must not be
            specialised to 1).
    """
    check_export_options(opset, exporter)
    path = Path(path)
    outputs = list(output_names)
    graph = graph.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # The exporters' own chatter (tracer and deprecation warnings) says nothing about this
        # graph; a real failure raises.
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
                raise InputError(
                    f"the dynamo exporter needs torch >= 2.5 (this is {torch.__version__}); "
                    "use --exporter torchscript"
                )
            batch = torch.export.Dim("rois")
            _quiet_dynamo(
                lambda: torch.onnx.export(
                    graph,
                    (example,),
                    str(path),
                    dynamo=True,
                    external_data=False,  # one file: the weights inside the graph
                    opset_version=opset,
                    dynamic_shapes={INPUT_NAME: {0: batch}},
                    verbose=False,
                    input_names=[INPUT_NAME],
                    output_names=outputs,
                )
            )
        else:
            with _atanh_symbolic():
                torch.onnx.export(
                    graph,
                    (example,),
                    str(path),
                    dynamo=False,
                    opset_version=opset,
                    dynamic_axes={
                        INPUT_NAME: {0: "rois"},
                        **{o: {0: "rois"} for o in outputs},
                    },
                    input_names=[INPUT_NAME],
                    output_names=outputs,
                )
    written = written_opset(path)
    if written != opset:  # the dynamo exporter keeps its own opset when it cannot convert
        raise InputError(
            f"--opset {opset}: the {exporter} exporter wrote opset {written} instead (it could "
            "not convert the graph); use --opset 18, or --exporter torchscript for older opsets"
        )
    return path


def check_export_options(opset: int, exporter: str) -> None:
    """One line for an exporter name or an opset this graph cannot have (before any work).

    Raises:
        InputError: unknown ``exporter``, or ``opset`` < 11 (ONNX's Resize, which carries the
            bicubic up-sampling of G's skip and of the bicubic control, has a cubic mode from
            opset 11 on).
    """
    if exporter not in EXPORTERS:
        raise InputError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    if opset < 11:
        raise InputError(f"--opset {opset}: the re-scorer needs opset 11 or later")


def written_opset(path: str | Path) -> int:
    """The default-domain opset of the ONNX file at ``path``."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _quiet_dynamo(export: Any) -> None:
    """Run ``export`` with the dynamo exporter's progress lines (printed on stdout, which holds
    the command's own output) kept back, shown only if it fails, and its loggers' warnings off
    (an opset it cannot convert to logs a traceback; :func:`export_graph` says it in one line)."""
    import contextlib
    import io
    import logging

    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [lg.level for lg in loggers]
    buf = io.StringIO()
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with contextlib.redirect_stdout(buf):
            export()
    except Exception:
        print(buf.getvalue(), end="")
        raise
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session of ``path`` (``threads``: intra-op threads, default torch's)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.log_severity_level = 3  # errors only: its graph-optimiser notes are not ours
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def real_crops(
    images: Sequence[str | Path],
    lr_size: int,
    scale: int,
    context: float,
    per_image: int = 32,
    seed: int = 0,
) -> Tensor:
    """LR crops (len(images) * per_image, 3, lr_size, lr_size) in [-1, 1] of random boxes in
    real images, cut as inference cuts proposals (:func:`crop_lr_for_inference`).

    Box sides are log-uniform from 8 px to half the image's shorter side (aspect 0.5-2), so the
    crops span the sizes proposals have; seeded, so the check is repeatable.
    """
    g = torch.Generator().manual_seed(seed)
    out = []
    for path in images:
        image = load_image(path)  # (3, H, W) [0, 1]; an unreadable file: one line naming it
        h, w = int(image.shape[1]), int(image.shape[2])
        hi = max(math.log(8.0), math.log(max(min(h, w) / 2, 8.0)))
        side = torch.exp(torch.empty(per_image).uniform_(math.log(8.0), hi, generator=g))
        aspect = torch.exp(torch.empty(per_image).uniform_(-0.69, 0.69, generator=g))
        bw = (side * aspect.sqrt()).clamp(max=w)
        bh = (side / aspect.sqrt()).clamp(max=h)
        x0 = torch.rand(per_image, generator=g) * (w - bw)
        y0 = torch.rand(per_image, generator=g) * (h - bh)
        boxes = torch.stack([x0, y0, x0 + bw, y0 + bh], dim=1)
        out.append(crop_lr_for_inference(image, boxes, lr_size, context, scale=scale))
    if not out:
        raise InputError("no images to cut check crops from")
    return torch.cat(out)


@torch.no_grad()
def _torch_outputs(graph: nn.Module, crops: Tensor, chunk: int) -> list[np.ndarray]:
    parts = [graph(crops[i : i + chunk]) for i in range(0, crops.shape[0], chunk)]
    return [torch.cat([p[j] for p in parts]).float().numpy() for j in range(len(parts[0]))]


def _onnx_outputs(session: Any, crops: Tensor, chunk: int) -> list[np.ndarray]:
    x = crops.numpy()
    parts = [session.run(None, {INPUT_NAME: x[i : i + chunk]}) for i in range(0, len(x), chunk)]
    return [np.concatenate([p[j] for p in parts]) for j in range(len(parts[0]))]


def _max_diffs(names: Sequence[str], a: list[np.ndarray], b: list[np.ndarray]) -> dict[str, float]:
    if [x.shape for x in a] != [x.shape for x in b]:
        raise OnnxMismatchError(
            f"ONNX output shapes {[x.shape for x in b]} differ from PyTorch's {[x.shape for x in a]}"
        )
    return {n: float(np.abs(x - y).max()) for n, x, y in zip(names, a, b, strict=True)}


@dataclass
class OnnxExport:
    """What :func:`export_rescorer` wrote and measured."""

    onnx: Path
    sidecar: Path
    max_abs_diff: float  # over every output, ONNX vs the PyTorch inference copy
    per_output: dict[str, float]
    crops: int
    info: dict[str, Any] = field(default_factory=dict)  # the sidecar's content


def export_rescorer(
    variant: GANVariant,
    out_dir: str | Path,
    check_crops: Tensor,
    class_names: Sequence[str],
    opset: int = DEFAULT_OPSET,
    exporter: str = "dynamo",
    tolerance: float = DEFAULT_TOLERANCE,
    context: float = 1.0,
    source: dict[str, Any] | None = None,
    chunk: int = 256,
) -> OnnxExport:
    """Export ``variant``'s re-scorer to ``out_dir/rescorer.onnx`` with a ``rescorer.json``
    sidecar, after checking it with onnxruntime on ``check_crops`` (M, 3, h, w).

    The check runs the ONNX file and the PyTorch inference copy on the same crops in chunks of
    ``chunk`` plus one single-crop batch (the batch axis is dynamic); the largest absolute
    difference over all outputs must be at most ``tolerance``. The difference from the unfolded
    model is recorded beside it.

    Raises:
        OnnxMismatchError: the difference exceeds ``tolerance``; nothing is left in ``out_dir``
            (a file named rescorer.onnx is always a checked one).
    """
    if check_crops.ndim != 4 or check_crops.shape[0] < 2:
        raise InputError(
            f"need at least 2 check crops (M, 3, h, w), got {tuple(check_crops.shape)}"
        )
    if len(class_names) != num_classes(variant):
        raise InputError(
            f"{len(class_names)} class names for a D that scores {num_classes(variant)} classes"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lr_size = int(check_crops.shape[-1])
    variant = variant.eval()
    fast = rescorer_copy(variant, check_crops[:4])
    names = onnx_outputs(variant)
    tmp = out / f".{ONNX_FILE}.{os.getpid()}.tmp"
    t0 = time.perf_counter()
    try:
        export_graph(RescorerGraph(fast), check_crops[:2], tmp, names, opset, exporter)
        export_s = time.perf_counter() - t0
        session = onnx_session(tmp)
        ref = _torch_outputs(RescorerGraph(fast), check_crops, chunk)
        got = _onnx_outputs(session, check_crops, chunk)
        per_output = _max_diffs(names, ref, got)
        single = _max_diffs(
            names,
            _torch_outputs(RescorerGraph(fast), check_crops[:1], 1),
            _onnx_outputs(session, check_crops[:1], 1),
        )
        per_output = {k: max(v, single[k]) for k, v in per_output.items()}
        unfolded = _max_diffs(
            names, _torch_outputs(RescorerGraph(variant), check_crops, chunk), got
        )
        worst = max(per_output.values())
        if not worst <= tolerance:  # also NaN
            raise OnnxMismatchError(
                f"onnxruntime differs from PyTorch by {worst:.3g} (> tolerance {tolerance:g}) on "
                f"{check_crops.shape[0]} real crops ({_fmt(per_output)}); nothing written"
            )
        onnx_path = out / ONNX_FILE
        os.replace(tmp, onnx_path)
    finally:
        tmp.unlink(missing_ok=True)
    info = _sidecar(
        variant, fast, names, class_names, lr_size, context, opset, exporter, per_output,
        unfolded, tolerance, int(check_crops.shape[0]), export_s, source,
    )  # fmt: skip
    sidecar = out / SIDECAR_FILE
    text = json.dumps(info, indent=1) + "\n"
    part = sidecar.with_name(sidecar.name + ".tmp")
    part.write_text(text)
    os.replace(part, sidecar)
    return OnnxExport(onnx_path, sidecar, worst, per_output, int(check_crops.shape[0]), info)


def _fmt(diffs: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in diffs.items())


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def _sidecar(
    variant: GANVariant,
    fast: GANVariant,
    names: list[str],
    class_names: Sequence[str],
    lr_size: int,
    context: float,
    opset: int,
    exporter: str,
    per_output: dict[str, float],
    unfolded: dict[str, float],
    tolerance: float,
    crops: int,
    export_s: float,
    source: dict[str, Any] | None,
) -> dict[str, Any]:
    """The sidecar JSON: how to feed the graph, what it returns, how it was checked."""
    k = int(variant.discriminator.num_cls_logits)
    scale = variant.scale
    outputs: list[dict[str, Any]] = [
        {
            "name": "probs",
            "shape": ["N", k],
            "meaning": "p(face): sigmoid of D's class logit"
            if k == 1
            else "softmax over C + 1 classes, index 0 = background, index i = class_names[i - 1]",
        }
    ]
    if "box_deltas" in names:
        box = getattr(variant.discriminator, "box_head", None)
        agnostic = bool(getattr(box, "class_agnostic", False))
        outputs.append(
            {
                "name": "box_deltas",
                "shape": ["N", 4 if agnostic else 4 * k],
                "meaning": "Fast R-CNN deltas (dx, dy, dw, dh) "
                + ("shared by every class" if agnostic else "per class slot (slot 0: background)")
                + ", relative to the proposal squared on its longer side and enlarged by context",
                "box_coder_weights": list(BOX_CODER_WEIGHTS),
            }
        )
    cfg = variant.cfg
    return {
        "format": SIDECAR_FORMAT,
        "onnx": ONNX_FILE,
        "variant": variant.name,
        "generator": str(getattr(cfg, "generator", "paper")),
        "backbone": str(getattr(cfg, "backbone", "")),
        "num_classes": num_classes(variant),
        "class_names": list(class_names),
        "input": {
            "name": INPUT_NAME,
            "shape": ["N", 3, lr_size, lr_size],
            "dtype": "float32",
            "range": [-1.0, 1.0],
            "lr_size": lr_size,
            "scale": scale,
            "hr_size": lr_size * scale,
            "context": context,
            "crop": "RGB; the proposal squared on its longer side and enlarged by context, cut "
            "at hr_size and down-sampled by scale with antialiased bicubic "
            "(gan_detect.data.roi.crop_lr_for_inference); pixels outside the image are 0 (mid-grey)",
        },
        "outputs": outputs,
        "opset": opset,
        "exporter": exporter,
        # The copy is refused (with a warning) when folding changes a probe's outputs.
        "network": "inference copy: eval mode, BatchNorm folded into the convolutions"
        if fast is not variant
        else "the model itself, eval mode (its BatchNorm-folded copy was refused)",
        "check": {
            "runtime": "onnxruntime, CPUExecutionProvider",
            "reference": "the PyTorch inference copy (what predict runs)",
            "crops": crops,
            "max_abs_diff": max(per_output.values()),
            "max_abs_diff_per_output": per_output,
            "max_abs_diff_vs_unfolded_model": max(unfolded.values()),
            "tolerance": tolerance,
            **({"source": source} if source else {}),
        },
        "export_s": round(export_s, 2),
        "versions": _versions(),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
