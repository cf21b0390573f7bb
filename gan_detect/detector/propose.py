"""Run the baseline detector over a dataset and write its proposals in the official layouts.

The proposals file is the hand-over point of the pipeline (docs/design.md §1): any
detector that writes a COCO results JSON or a WIDER per-image txt tree can replace this one.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from gan_detect.data.batch import DetectionBatch
from gan_detect.data.full_image import FullImageDataset
from gan_detect.data.paths import IMAGE_SUFFIXES
from gan_detect.data.records import ImageRecord, Proposals
from gan_detect.detector.model import get_postprocess, set_postprocess
from gan_detect.detector.module import DetectorModule, detections_to_proposals
from gan_detect.models.fusion import checked_inference_copy, is_compiled
from gan_detect.utils.console import show_progress
from gan_detect.utils.errors import InputError

FORMATS = ("coco", "wider")
COCO_FILE = "proposals.json"
WIDER_DIR = "proposals_wider"
SKIPPED_FILE = "skipped_images.json"  # propose --images: the unreadable images and why


def run_proposals(
    model: DetectorModule | nn.Module,
    dataset_or_records: Dataset[DetectionBatch] | Sequence[ImageRecord],
    *,
    top_k: int = 600,
    score_thresh: float = 0.02,
    nms_thresh: float | None = None,
    batch_size: int = 2,
    device: str | torch.device = "cpu",
    progress: bool = True,
    num_workers: int = 0,
    fast: bool = True,
    skipped: list[dict[str, str]] | None = None,
) -> dict[str, Proposals]:
    """Detect on every image and keep the ``top_k`` best boxes per image.

    Args:
        model: a :class:`DetectorModule` or a torchvision detection model from
            :func:`~gan_detect.detector.model.build_detector`.
        dataset_or_records: a dataset of one-image :class:`DetectionBatch` items (e.g.
            :class:`FullImageDataset`) or the image records themselves.
        top_k: proposals kept per image (the detector's per-image budget is set to it).
        score_thresh: minimum detector score.
        nms_thresh: class-wise NMS IoU; ``None`` keeps the model's.
        device: where the model runs; it is moved there and left there.
        progress: show a tqdm bar.
        fast: run an inference copy of the model (BatchNorm folded; channels-last weights on
            the CPU), checked against the model on a probe image; ``False`` runs the model
            itself. Its speed-up: benchmarks/README.md (``--bench proposals``).
        skipped: when a list, an unreadable image (``InputError`` / ``OSError`` while
            decoding) is skipped and appended as ``{"image_id", "path", "error"}`` (a warning
            per image) instead of ending the run; ``num_workers`` must then be 0.

    Returns:
        ``{image_id: Proposals}`` with boxes in original image pixels, sorted by score.

    Raises:
        ValueError: if two images share an id.
    """
    net = model.model if isinstance(model, DetectorModule) else model
    if isinstance(dataset_or_records, Dataset):
        dataset: Dataset[Any] = dataset_or_records
    else:
        dataset = FullImageDataset(list(dataset_or_records))
    collate: Any = DetectionBatch.collate
    if skipped is not None:
        if num_workers:
            raise ValueError("skipped= needs num_workers=0 (the list lives in this process)")
        dataset, collate = _Skipping(dataset, skipped), _Skipping.collate
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate,
    )
    # Post-processing is changed for this run only and restored afterwards.
    saved = get_postprocess(net)
    set_postprocess(net, score_thresh, nms_thresh, top_k)
    was_training = net.training
    net.to(device).eval()
    runner = detector_inference_copy(net) if fast else net
    out: dict[str, Proposals] = {}
    try:
        with torch.no_grad():
            for batch in tqdm(
                loader, desc="proposals", unit="batch", disable=not show_progress(progress)
            ):
                if batch is None:  # every image of the batch was unreadable (and reported)
                    continue
                dets = runner([im.to(device) for im in batch.images])
                for image_id, det in zip(batch.image_ids, dets, strict=True):
                    if image_id in out:
                        raise InputError(f"image id {image_id!r} occurs twice in the dataset")
                    out[image_id] = detections_to_proposals(det).top_k(top_k)
    except KeyboardInterrupt:
        raise ProposalsInterrupted(out, len(dataset)) from None  # type: ignore[arg-type]
    finally:
        set_postprocess(net, *saved)
        net.train(was_training)
    return out


class _Skipping(Dataset[DetectionBatch | None]):
    """A :class:`FullImageDataset` whose unreadable images become ``None`` (reported in
    ``skipped`` with a warning) rather than an error that ends a whole folder's run."""

    def __init__(self, dataset: Any, skipped: list[dict[str, str]]) -> None:
        self.dataset, self.skipped = dataset, skipped

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> DetectionBatch | None:
        try:
            return self.dataset[index]  # type: ignore[no-any-return]
        except (InputError, OSError) as err:
            rec = self.dataset.records[index]
            self.skipped.append({"image_id": rec.image_id, "path": rec.path, "error": str(err)})
            warnings.warn(f"skipping: {err}", stacklevel=2)  # err names the file
            return None

    @staticmethod
    def collate(items: list[DetectionBatch | None]) -> DetectionBatch | None:
        kept = [it for it in items if it is not None]
        return DetectionBatch.collate(kept) if kept else None


class ProposalsInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run_proposals`: ``proposals`` holds the images finished before it.

    Callers write those (``written``: format -> path) and re-raise, so an interrupted run keeps
    its work; a partial file is refused by ``fit`` unless ``data.missing_proposals`` says how
    to treat the images it lacks.
    """

    def __init__(self, proposals: dict[str, Proposals], total: int) -> None:
        super().__init__(f"interrupted after {len(proposals)} of {total} images")
        self.proposals, self.total = proposals, total
        self.written: dict[str, Path] = {}


def write_partial(stop: ProposalsInterrupted, out_dir: str | Path, **kw: Any) -> None:
    """Write what an interrupted :func:`run_proposals` finished into ``out_dir`` (if any)."""
    if stop.proposals:
        stop.written = write_proposals(stop.proposals, out_dir, **kw)


def detector_inference_copy(net: nn.Module) -> nn.Module:
    """``net`` (eval mode) as an inference copy: BatchNorm folded, channels-last on the CPU.

    The copy's backbone features (``net.backbone``, as torchvision detection models have) must
    match the original's on a probe image (``fusion.checked_inference_copy``); otherwise, or
    when the model cannot be copied, ``net`` itself is returned with a warning. A model without
    a backbone module, or compiled in place, runs as it is. Post-processing settings are
    copied with the model.
    """
    if not isinstance(getattr(net, "backbone", None), nn.Module) or is_compiled(net):
        return net
    device = next(net.parameters()).device
    probe = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0)).to(device)

    def outputs_of(model: nn.Module) -> list[torch.Tensor]:
        feats = model.backbone(probe)  # type: ignore[operator]
        return list(feats.values()) if isinstance(feats, dict) else [feats]

    return checked_inference_copy(
        net, outputs_of, "proposals", fold_bn=True, channels_last=device.type == "cpu"
    )


def _formats_for(image_ids: Sequence[str]) -> tuple[str, ...]:
    """The layouts these ids fit: COCO needs integer ids, WIDER ``event/name`` ids."""
    fits = []
    if all(i.isdigit() for i in image_ids):
        fits.append("coco")
    if all(len(i.split("/")) == 2 and all(i.split("/")) for i in image_ids):
        fits.append("wider")
    return tuple(fits)


def write_proposals(
    dets: Mapping[str, Proposals],
    out_dir: str | Path,
    formats: Sequence[str] | None = None,
    category_ids: Sequence[int] | None = None,
) -> dict[str, Path]:
    """Write proposals as a COCO results JSON and/or a WIDER prediction tree.

    Args:
        dets: ``{image_id: Proposals}`` from :func:`run_proposals` (or any reader).
        out_dir: created if needed; receives ``proposals.json`` and/or ``proposals_wider/``.
        formats: ``"coco"`` and/or ``"wider"``; ``None`` writes every layout the ids fit
            (integer ids: COCO; ``event/name`` ids: WIDER).
        category_ids: COCO category id of each label 1..C (``category_ids[label - 1]``);
            ``None`` writes the label itself.

    Returns:
        ``{format: path written}``.

    Raises:
        ValueError: for an unknown format, or ids that the asked-for layout cannot hold.
    """
    # Lazy import: the readers/writers live in data/ (the one place that knows the formats).
    from gan_detect.data.proposals import write_coco_results, write_wider_tree

    ids = list(dets)
    fits = _formats_for(ids)
    if formats is None:
        formats = fits
        if not formats:
            raise InputError(
                "image ids fit neither COCO (integer ids) nor WIDER FACE ('event/name'), e.g. "
                f"{ids[0]!r}; nothing can be written"
            )
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise InputError(f"unknown proposal formats {unknown}; expected a subset of {FORMATS}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for fmt in formats:
        if fmt not in fits:
            need = "integer ids" if fmt == "coco" else "'event/name' ids"
            bad = next(i for i in ids if fmt not in _formats_for([i]))
            raise InputError(f"format {fmt!r} needs {need}; got image id {bad!r}")
        if fmt == "coco":
            written[fmt] = out_dir / COCO_FILE
            write_coco_results(dets, written[fmt], category_ids)
        else:
            written[fmt] = out_dir / WIDER_DIR
            write_wider_tree(dets, written[fmt])
    return written


def folder_records(folder: str | Path) -> list[ImageRecord]:
    """Image records (no annotations) for every image under ``folder``, sorted by path.

    Ids follow the official layouts so :func:`write_proposals` can write them: a WIDER tree
    (``<event>/<name>.jpg``) gives ``"event/name"``; a flat folder of integer-named images
    (COCO ``000000000009.jpg``) gives the integer id as text; any other flat folder gives
    ``"<folder name>/<stem>"`` (one pseudo-event, so the WIDER txt layout holds it).

    Raises:
        FileNotFoundError: naming the folder when it does not exist or holds no image.
        ValueError: naming both files when two images would get the same id.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    flat = all(p.parent == root for p in paths)
    coco = flat and all(p.stem.isdigit() for p in paths)
    seen: dict[str, Path] = {}
    records = []
    for p in paths:
        if coco:
            image_id = str(int(p.stem))
        elif flat:
            image_id = f"{root.name}/{p.stem}"
        else:
            image_id = f"{p.parent.name}/{p.stem}"
        if image_id in seen:
            raise InputError(f"images {seen[image_id]} and {p} would share the id {image_id!r}")
        seen[image_id] = p
        records.append(ImageRecord(image_id=image_id, path=str(p)))
    return records


def propose_folder(
    folder: str | Path,
    out_dir: str | Path,
    model: DetectorModule | nn.Module | None = None,
    *,
    top_k: int = 750,
    score_thresh: float | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Proposals for every image under ``folder`` (a WIDER tree or a flat folder), written.

    Args:
        folder: images; see :func:`folder_records` for the ids.
        out_dir: receives ``proposals.json`` (integer ids) and/or ``proposals_wider/``.
        model: a trained detector; ``None`` is the built-in pretrained RetinaFace.
        top_k, score_thresh: per-image budget and minimum score (WIDER: 750, 0.02); ``None``
            is the built-in detector's own (RetinaFace 0.02, FastestDet 0.001), else 0.02.

    Returns:
        ``{format: path written}``; a flat folder whose names are not integers gets, next to
        the WIDER tree, a COCO JSON with ids 1..N in file-name order (``"coco"``) and the
        table from those ids to the files (``"coco_ids"``: ``proposals_image_ids.json``).
    """
    if model is None:
        from gan_detect.detector.retinaface import RetinaFaceDetector

        model = RetinaFaceDetector()
    if score_thresh is None:
        score_thresh = float(getattr(model, "score_thresh", 0.02))
    records = folder_records(folder)
    skipped: list[dict[str, str]] = []
    try:
        dets = run_proposals(
            model, records, top_k=top_k, score_thresh=score_thresh, batch_size=1,
            progress=progress, skipped=skipped,
        )  # fmt: skip
    except ProposalsInterrupted as stop:
        write_partial(stop, out_dir)
        raise
    if skipped:  # the run goes on; the list says which images have no proposals, and why
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        listed = Path(out_dir) / SKIPPED_FILE
        listed.write_text(json.dumps(skipped, indent=1))
        warnings.warn(
            f"{len(skipped)} of {len(records)} images under {folder} were unreadable and have "
            f"no proposals (listed in {listed})",
            stacklevel=2,
        )
        records = [r for r in records if r.image_id in dets]
    # A built-in COCO detector names its own category ids (label k -> category_ids[k - 1]).
    cat_ids = getattr(model, "category_ids", None)
    written = write_proposals(dets, out_dir, category_ids=cat_ids)
    root = Path(folder)
    if "coco" not in written and all(Path(r.path).parent == root for r in records):
        written.update(_coco_with_id_table(dets, records, Path(out_dir)))
    return written


def _coco_with_id_table(
    dets: Mapping[str, Proposals], records: Sequence[ImageRecord], out: Path
) -> dict[str, Path]:
    """COCO results under ids 1..N (COCO ids are integers) and the id -> file table."""
    from gan_detect.data.proposals import write_coco_results

    table = [
        {"id": n, "file_name": Path(r.path).name, "image_id": r.image_id}
        for n, r in enumerate(records, start=1)
    ]
    renumbered = {str(t["id"]): dets[str(t["image_id"])] for t in table}
    coco = out / "proposals.json"
    write_coco_results(renumbered, coco)
    ids = out / "proposals_image_ids.json"
    ids.write_text(json.dumps(table, indent=1))
    return {"coco": coco, "coco_ids": ids}
