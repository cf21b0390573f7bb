"""The one COCO evaluation wrapper: backend parity, AP_tiny from the same run, who may run COCOeval."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import gan_detect.metrics.coco_eval as coco_eval
from gan_detect.metrics.coco_eval import (
    BACKEND_ENV,
    coco_evaluator,
    coco_results_to_dt,
    evaluate_coco,
    load_coco_gt,
    resolve_backend,
    summarize_ap,
)
from gan_detect.utils.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("GAN_DETECT_DATA", ROOT / ".." / "shared" / "data"))
FAKE100 = DATA / "coco" / "cocoapi_val2014_fake100"
PERSON = DATA / "coco" / "val2017_person"


def _fake100() -> tuple[Any, Any]:
    if not FAKE100.exists():
        pytest.skip(f"real data not found at {FAKE100} (set GAN_DETECT_DATA)")
    gt = load_coco_gt(FAKE100 / "instances_val2014_100.json")
    return gt, coco_results_to_dt(gt, FAKE100 / "instances_val2014_fakebbox100_results.json")


def _person_jittered() -> tuple[Any, Any]:
    """val2017 person-subset ground truth of 150 test images, boxes jittered (seed 0) as results."""
    if not PERSON.exists():
        pytest.skip(f"real data not found at {PERSON} (set GAN_DETECT_DATA)")
    data = json.loads((PERSON / "instances_val2017_person.json").read_text())
    ids = set(sorted(json.loads((PERSON / "split.json").read_text())["test"])[:150])
    data = {
        "images": [im for im in data["images"] if im["id"] in ids],
        "annotations": [a for a in data["annotations"] if a["image_id"] in ids],
        "categories": data["categories"],
    }
    rng = np.random.default_rng(0)

    def jitter(bbox: list[float]) -> list[float]:
        # A valid detection (w, h > 0: the results check refuses negative sizes).
        x, y, w, h = np.asarray(bbox, float) + rng.normal(0, 2, 4)
        return [float(x), float(y), float(max(w, 0.5)), float(max(h, 0.5))]

    dets = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "score": float(rng.uniform()),
         "bbox": jitter(a["bbox"])}
        for a in data["annotations"] if rng.uniform() < 0.8
    ]  # fmt: skip
    gt = load_coco_gt(data)
    return gt, coco_results_to_dt(gt, dets)


@pytest.mark.parametrize("source", [_fake100, _person_jittered], ids=["fake100", "val2017_person"])
def test_faster_backend_gives_the_pycocotools_stats_on_real_files(source: Any) -> None:
    gt, dt = source()
    ref = evaluate_coco(gt, dt, backend="pycocotools")
    fast = evaluate_coco(gt, dt, backend="faster_coco_eval")
    assert set(fast) == set(ref)
    assert ref["map_tiny"] > 0 and ref["map"] > 0  # both files have tiny objects and hits
    # Equal up to float summation order (COCOeval_faster's C++ accumulate): < 1e-12.
    assert fast == pytest.approx(ref, abs=1e-12, rel=0)


def test_ap_tiny_of_the_one_run_equals_a_separate_pycocotools_tiny_run() -> None:
    from pycocotools.cocoeval import COCOeval

    gt, dt = _fake100()
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, dt, "bbox")  # the independent reference: only the tiny range
        ev.params.areaRng = [[0.0, 16.0**2]]
        ev.params.areaRngLbl = ["tiny"]
        ev.params.maxDets = [100]
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"][:, :, :, 0, 0]
    reference = float(prec[prec > -1].mean())
    for backend in ("pycocotools", "faster_coco_eval"):
        ours = evaluate_coco(gt, dt, (1, 10, 100), backend=backend)
        assert ours["map_tiny"] == pytest.approx(reference, abs=1e-12, rel=0)
        assert ours["map_tiny"] != pytest.approx(ours["map_small"], abs=1e-3)


def _count_cocoeval(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    made: list[str] = []
    real = coco_eval._cocoeval_class

    def counting(backend: Any) -> Any:
        cls = real(backend)

        def build(*args: Any, **kwargs: Any) -> Any:
            made.append(backend)
            return cls(*args, **kwargs)

        return build

    monkeypatch.setattr(coco_eval, "_cocoeval_class", counting)
    return made


@pytest.mark.parametrize("backend", ["pycocotools", "faster_coco_eval"])
def test_coco_mean_ap_runs_one_cocoeval_per_compute(
    monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    from gan_detect.metrics.coco_map import CocoMeanAP

    made = _count_cocoeval(monkeypatch)
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 80.0, 80.0]])
    metric = CocoMeanAP(backend=backend)  # type: ignore[arg-type]
    metric.update(
        [{"boxes": boxes, "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 1])}],
        [{"boxes": boxes, "labels": torch.tensor([1, 1])}],
    )
    out = metric.compute()
    assert made == [backend]
    assert float(out["map_tiny"]) == pytest.approx(1.0) and float(out["map"]) == pytest.approx(1.0)


def test_every_ap_reads_the_last_max_dets_on_both_backends() -> None:
    """The only true box ranks 151st: found at 1000 detections per image, not at 100.

    pycocotools' own ``summarize`` reads ``map`` at 100 whatever ``maxDets`` says (faster's at
    the last); the wrapper reads every AP at the last for both.
    """
    gt = load_coco_gt(
        {
            "images": [{"id": 1, "width": 2000, "height": 2000}],
            "annotations": [
                {
                    "id": 1,
                    "image_id": 1,
                    "category_id": 1,
                    "bbox": [0, 0, 10, 10],
                    "area": 100,
                    "iscrowd": 0,
                }
            ],  # fmt: skip
            "categories": [{"id": 1}],
        }
    )
    junk = [
        {"image_id": 1, "category_id": 1, "bbox": [100.0 + 12 * k, 500.0, 10, 10], "score": 0.9}
        for k in range(150)
    ]
    dt = coco_results_to_dt(gt, [*junk, {"image_id": 1, "category_id": 1,
                                         "bbox": [0, 0, 10, 10], "score": 0.1}])  # fmt: skip
    stats = {b: evaluate_coco(gt, dt, backend=b) for b in ("pycocotools", "faster_coco_eval")}
    assert stats["pycocotools"] == pytest.approx(stats["faster_coco_eval"], abs=1e-12)
    assert stats["pycocotools"]["map"] == pytest.approx(1 / 151, abs=1e-3)
    ev = coco_evaluator(gt, dt, backend="pycocotools")
    assert summarize_ap(ev, max_det=100) == 0.0


def test_backend_choice_env_override_and_bad_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    assert resolve_backend() == "faster_coco_eval"  # a dependency of the package
    assert resolve_backend("pycocotools") == "pycocotools"
    monkeypatch.setenv(BACKEND_ENV, "pycocotools")
    assert resolve_backend() == "pycocotools"
    monkeypatch.setenv(BACKEND_ENV, "detectron2")
    with pytest.raises(InputError, match=re.escape(f"${BACKEND_ENV}")):
        resolve_backend()
    with pytest.raises(InputError, match="backend: unknown COCO backend 'x'"):
        resolve_backend("x")


def _sources(*folders: str) -> list[Path]:
    return [p for f in folders for p in sorted((ROOT / f).rglob("*.py"))]


def test_only_the_wrapper_constructs_cocoeval_or_writes_the_areas() -> None:
    # Importing the class (either library), calling it, or torchmetrics' backend handle to it.
    construct = re.compile(r"pycocotools\.cocoeval|COCOeval_faster|COCOeval\s*\(|\.cocoeval\b")
    area = re.compile(r"\b(16|32|96)(\.0)?\s*\*\*\s*2\b")
    wrapper = ROOT / "gan_detect" / "metrics" / "coco_eval.py"
    offenders = [
        str(p.relative_to(ROOT))
        for p in _sources("gan_detect", "experiments", "benchmarks")
        if p != wrapper and construct.search(p.read_text())
    ]
    assert offenders == []
    areas = [
        str(p.relative_to(ROOT))
        for p in _sources("gan_detect")
        if p != wrapper and area.search(p.read_text())
    ]
    assert areas == []
    assert construct.search(wrapper.read_text())  # the scan would see one


def test_metrics_modules_import_no_private_names() -> None:
    found = []
    for p in _sources("gan_detect/metrics"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gan_detect"):
                found += [f"{p.name}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert found == []


BOOTSTRAP_NAMES = [
    "COCO_APPROXIMATION", "COCO_AREAS", "COCO_METRICS", "LEVEL", "WIDER_APPROXIMATION",
    "WIDER_METRICS", "CocoTables", "Difference", "ImageTables", "MetricComparison",
    "PairedBootstrap", "SeedBootstrap", "SeedMetric", "WiderTables", "bootstrap_weights",
    "coco_paired_bootstrap", "coco_results_to_dt", "coco_tables", "load_coco_gt",
    "nested_seed_bootstrap", "paired_bootstrap", "seed_bootstrap", "wider_paired_bootstrap",
    "wider_tables",
]  # fmt: skip


def test_bootstrap_names_import_from_the_module_and_the_package() -> None:
    import gan_detect.metrics as package
    import gan_detect.metrics.bootstrap as bootstrap

    for name in BOOTSTRAP_NAMES:
        assert getattr(bootstrap, name) is getattr(package, name), name
    assert callable(package.coco_tables)  # the function, not a module of that name
    for name in package.__all__:
        assert getattr(package, name) is not None, name
