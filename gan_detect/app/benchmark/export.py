"""``export``: ms per ROI of the re-scorer in PyTorch and in onnxruntime on the CPU.

PyTorch runs what ``predict`` runs on a CPU (the inference copy: BatchNorm folded, channels-last
weights, :func:`gan_detect.infer.inference.inference_variant`); onnxruntime runs the graph
``gan-detect export`` writes (:mod:`gan_detect.infer.onnx_export`) with as many intra-op threads
as torch has. Both take the same ``--rois`` LR crops (the chunk inference sends) per call, at
each ``--lr-sizes`` side (the real experiments crop 8 px, the default config 16 px), alternated
call by call so that a shared machine's load falls on both alike. Weights are seeded random
ones: the cost does not depend on their values. Results: ``benchmarks/results/export.jsonl``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gan_detect.app.benchmark.common import Recorder, build_from_raw, median, raw_config, warn


def _random_bn_statistics(variant: torch.nn.Module, seed: int) -> None:
    """Running statistics away from (0, 1), so folding and the check see non-trivial affine
    maps (a fresh network's would be the identity)."""
    g = torch.Generator().manual_seed(seed)
    for m in variant.modules():
        if isinstance(m, torch.nn.BatchNorm2d) and m.running_mean is not None:
            assert m.running_var is not None
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)


def run_export(args: argparse.Namespace, rec: Recorder) -> None:
    """One line per size x variant x LR side x exporter: ms per ROI of both, their ratio, the
    largest output difference, the export's seconds and the file's size."""
    from gan_detect.infer.inference import InferenceOptions, inference_variant
    from gan_detect.infer.onnx_export import (
        RescorerGraph,
        export_graph,
        onnx_outputs,
        onnx_session,
        rescorer_copy,
    )

    if args.device not in (None, "cpu"):
        warn("--bench export measures the CPU: --device ignored")
    threads = torch.get_num_threads()
    tmp = Path(tempfile.mkdtemp(prefix="gan_detect_export_bench_"))
    for size in args.sizes:
        for name in args.variants:
            for lr_side in args.lr_sizes:
                raw = raw_config(name, size, 1, hr_size=lr_side * 4, backbone=args.backbone)
                variant = build_from_raw(raw, args.seed).eval()
                _random_bn_statistics(variant, args.seed)
                g = torch.Generator().manual_seed(args.seed)
                lr = torch.rand(args.rois, 3, lr_side, lr_side, generator=g) * 2 - 1
                # What predict runs on a CPU, and the copy that is exported (no channels-last).
                opts = InferenceOptions(lr_size=lr_side)
                graph = RescorerGraph(inference_variant(variant, opts, probe=lr[:4])).eval()
                exported = RescorerGraph(rescorer_copy(variant, lr[:4])).eval()
                for exporter in args.exporters:
                    if rec.out_of_time():
                        return
                    path = tmp / f"{name}_{size}_{lr_side}_{exporter}.onnx"
                    t0 = time.perf_counter()
                    names = onnx_outputs(variant)
                    export_graph(exported, lr[:2], path, names, args.opset, exporter)
                    export_s = time.perf_counter() - t0
                    session = onnx_session(path, threads)
                    x = lr.numpy()
                    rec.emit(
                        {
                            "variant": name,
                            "size": size,
                            "backbone": raw["variant"]["backbone"],
                            "lr": lr_side,
                            "rois": args.rois,
                            "exporter": exporter,
                            "opset": args.opset,
                            "threads": threads,
                            **_time_both(graph, session, lr, x, args.rounds, args.warmup),
                            "export_s": round(export_s, 2),
                            "onnx_mb": round(path.stat().st_size / 2**20, 2),
                        }
                    )
                    path.unlink()


def _time_both(
    graph: torch.nn.Module,
    session: Any,
    lr: torch.Tensor,
    x: np.ndarray,
    rounds: int,
    warmup: int,
) -> dict[str, Any]:
    """PyTorch and onnxruntime on the same (N, 3, h, w) crops, alternated call by call."""

    def torch_call() -> list[np.ndarray]:
        with torch.no_grad():
            return [t.float().numpy() for t in graph(lr)]

    def ort_call() -> list[np.ndarray]:
        return list(session.run(None, {"lr": x}))

    for _ in range(max(1, warmup)):
        a, b = torch_call(), ort_call()
    diff = max(float(np.abs(p - q).max()) for p, q in zip(a, b, strict=True))
    times: dict[str, list[float]] = {"torch": [], "ort": []}
    for r in range(rounds):
        order = [("torch", torch_call), ("ort", ort_call)]
        for key, call in order if r % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            call()
            times[key].append(time.perf_counter() - t0)
    n = lr.shape[0]
    t_torch, t_ort = median(times["torch"]), median(times["ort"])
    return {
        "rounds": rounds,
        "torch_ms_per_roi": round(1000 * t_torch / n, 4),
        "ort_ms_per_roi": round(1000 * t_ort / n, 4),
        "ort_speedup": round(t_torch / t_ort, 2),
        "max_abs_diff": diff,
    }
