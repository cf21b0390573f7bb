"""The on-disk ROI store: HR crops mined once per image (gan_detect.data.roi), as sharded uint8
arrays plus per-ROI metadata, and the Datasets that read it (docs/design.md §1, D5).

Layout of a store directory::

    meta.json             format version, parameters, counts per label, input fingerprint
    hr_00000.npy ...      (n, hr, hr, 3) uint8 shards of ``shard_size`` ROIs (the last shorter)
    labels.npy            (N,) int64      box_targets.npy (N, 4) float32
    src_sizes.npy (N, 2) float32   boxes.npy (N, 4) float32   image_index.npy (N,) int64
    image_ids.json        image ids, indexed by image_index

LR is not stored: ``make_lr`` of a crop is cheap (benchmarks/README.md, ``--bench data``) and is then exactly
the training LR of the (possibly flipped) HR.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from gan_detect.data.batch import RoiBatch
from gan_detect.data.full_image import load_image
from gan_detect.data.records import ImageRecord, Proposals
from gan_detect.data.roi import (
    MiningParams,
    clip_proposals,
    gt_jitter_proposals,
    hr_from_uint8,
    make_lr,
    mine_rois,
)
from gan_detect.utils.console import show_progress
from gan_detect.utils.errors import InputError
from gan_detect.utils.locks import hold_lock

# 2: box targets encoded against the crop window (encode_roi_targets), not the proposal.
FORMAT_VERSION = 2
_META_ARRAYS = ("labels", "box_targets", "src_sizes", "boxes", "image_index")


def _fingerprint(
    records: Sequence[ImageRecord], proposals: Mapping[str, Proposals] | None, params: dict
) -> str:
    """sha256 over the parameters, the annotations, image file size+mtime, and the proposals."""
    h = hashlib.sha256(json.dumps({"v": FORMAT_VERSION, **params}, sort_keys=True).encode())
    for r in records:
        try:
            st = os.stat(r.path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except FileNotFoundError:
            raise FileNotFoundError(f"image file not found: {r.path} ({r.image_id})") from None
        h.update(f"{r.image_id}|{r.path}|{stamp}|".encode())
        for a in (r.boxes, r.labels, r.ignore):
            h.update(np.ascontiguousarray(a).tobytes())
        if proposals is not None and r.image_id in proposals:
            p = proposals[r.image_id]
            for a in (p.boxes, p.scores, p.labels):
                h.update(np.ascontiguousarray(a).tobytes())
        h.update(b"#")
    return h.hexdigest()


def _read_meta(store: Path) -> dict[str, Any] | None:
    """meta.json of a complete store, else None (meta.json is the last file written)."""
    try:
        return dict(json.loads((store / "meta.json").read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def build_roi_store(
    records: Sequence[ImageRecord],
    proposals: Mapping[str, Proposals] | None,
    out_dir: str | os.PathLike[str],
    params: MiningParams | None = None,
    *,
    shard_size: int = 4096,
    seed: int = 0,
    jitter_when_missing: bool = True,
    source: str | None = None,
    progress: bool = True,
    is_main: bool = True,
    wait_timeout_s: float = 24 * 3600.0,
) -> Path:
    """Mine every image once into a store at ``out_dir``; reuse it when the inputs are unchanged.

    ``params`` (default ``MiningParams()``) says how each image is mined. Images without proposals (or all, when ``proposals`` is None) get
    :func:`gt_jitter_proposals` when ``jitter_when_missing``, else only their GT boxes (with
    ``include_gt``). Reuse is decided by a fingerprint of the parameters, records (ids, boxes,
    labels, ignore flags, image file size and mtime) and proposals; a mismatch rebuilds. The store
    is built in a sibling temp dir and renamed into place, so a crash never leaves a store that
    looks complete. Under DDP pass ``is_main=False`` on all ranks but one per filesystem: those
    wait (polling meta.json, up to ``wait_timeout_s``) for the main rank's store. Main callers
    also serialise on a ``flock`` next to the store and re-check the fingerprint after taking
    it, so two nodes' rank 0 on a shared filesystem build once.

    Returns:
        The store directory (``out_dir``).
    """
    out = Path(out_dir)
    mining = params if params is not None else MiningParams()
    # The fingerprint's keys: the mining fields plus the store's own three, as in every store
    # built so far (renaming one would rebuild them all).
    store_params: dict[str, Any] = {
        **dataclasses.asdict(mining),
        "shard_size": shard_size,
        "seed": seed,
        "jitter_when_missing": jitter_when_missing,
    }
    fp = _fingerprint(records, proposals, store_params)
    meta = _read_meta(out)
    if meta is not None and meta.get("fingerprint") == fp and is_main:
        damage = verify_store(out, meta)
        if damage is None:
            print(f"reusing ROI store at {out} ({meta['num_rois']} ROIs)")
            return out
        print(f"ROI store at {out} is damaged ({damage}): rebuilding it")
        meta = None
    if meta is not None and meta.get("fingerprint") == fp:
        return out
    if not is_main:
        deadline = time.monotonic() + wait_timeout_s
        while time.monotonic() < deadline:
            meta = _read_meta(out)
            if meta is not None and meta.get("fingerprint") == fp:
                return out
            time.sleep(1.0)
        raise TimeoutError(f"waited {wait_timeout_s:.0f} s for the main rank's ROI store at {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with hold_lock(out.parent / f".{out.name}.lock", wait=True, on_takeover=print):
        meta = _read_meta(out)  # another main process may have built it while we waited
        if meta is not None and meta.get("fingerprint") == fp and verify_store(out, meta) is None:
            print(f"reusing ROI store at {out} ({meta['num_rois']} ROIs)")
            return out
        tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir()
            meta = _mine_into(tmp, records, proposals, mining, store_params, progress, source)
            meta["fingerprint"] = fp
            meta["sha256"] = {f.name: _sha256(f) for f in sorted(tmp.iterdir())}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            if out.exists():  # move the stale store aside: rename cannot replace a full dir
                old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
                out.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            tmp.rename(out)
        except OSError as err:
            # A full disk or a read-only cache: one line naming the file (OSError's filename).
            mine = str(err.filename or "").startswith((str(tmp), str(out)))
            if not (mine or err.errno in (errno.ENOSPC, errno.EDQUOT)):
                raise  # e.g. an image file that went missing: its own message names it
            raise OSError(
                err.errno,
                f"cannot write the ROI store {out}: {err.strerror or err}",
                err.filename or str(tmp),
            ) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"built ROI store at {out} ({meta['num_rois']} ROIs, labels {meta['label_counts']})")
    return out


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify_store(store: str | os.PathLike[str], meta: dict[str, Any] | None = None) -> str | None:
    """What is wrong with a complete-looking store (a file named), or None when it is intact.

    Each file is checked against the sha256 that meta.json recorded when the store was built
    (a zeroed, truncated or edited shard or label file), and every label must be a class index
    of the store (``0..max`` of its ``label_counts``). A store of an older version without
    checksums counts as damaged, so it is rebuilt once.
    """
    store = Path(store)
    meta = meta if meta is not None else _read_meta(store)
    if meta is None:
        return f"{store / 'meta.json'} is missing or unreadable"
    sums = meta.get("sha256")
    if not isinstance(sums, dict):
        return f"{store / 'meta.json'} has no checksums (an older store)"
    for name, digest in sorted(sums.items()):
        f = store / name
        if not f.is_file():
            return f"{f} is missing"
        if _sha256(f) != digest:
            return f"{f} does not match its checksum (truncated or changed)"
    return None


def _mine_into(
    tmp: Path,
    records: Sequence[ImageRecord],
    proposals: Mapping[str, Proposals] | None,
    mining: MiningParams,
    params: dict[str, Any],
    progress: bool,
    source: str | None = None,
) -> dict[str, Any]:
    """Mine all records into ``tmp`` (shards + metadata); return the meta dict (sans fingerprint).

    ``params`` is the store's parameter record (``mining`` plus shard size, seed and jitter).
    """
    p = params
    gen = torch.Generator().manual_seed(p["seed"])
    parts: dict[str, list[np.ndarray]] = {k: [] for k in _META_ARRAYS}
    buf: list[np.ndarray] = []
    buffered = 0
    shard_sizes: list[int] = []

    def flush(final: bool) -> None:
        nonlocal buf, buffered
        while buffered >= p["shard_size"] or (final and buffered > 0):
            hr = np.concatenate(buf)
            n = min(p["shard_size"], len(hr))
            np.save(tmp / f"hr_{len(shard_sizes):05d}.npy", hr[:n])
            shard_sizes.append(n)
            buf, buffered = [hr[n:]], len(hr) - n

    given = usable = 0  # proposal boxes read / left after clipping to their image
    for i, rec in enumerate(tqdm(records, desc="mining ROIs", disable=not show_progress(progress))):
        image = load_image(rec.path)
        rec = rec.clipped_to(int(image.shape[1]), int(image.shape[2]))
        props = proposals.get(rec.image_id) if proposals is not None else None
        if props is not None and len(props):
            size = (int(image.shape[1]), int(image.shape[2]))
            given += len(props)
            usable += len(
                clip_proposals(torch.as_tensor(props.boxes, dtype=torch.float32), size)[1]
            )
        if props is None or len(props) == 0:
            if p["jitter_when_missing"]:
                size = (int(image.shape[1]), int(image.shape[2]))
                props = gt_jitter_proposals(rec, seed=p["seed"] * 1_000_003 + i, image_size=size)
            else:
                props = Proposals(np.zeros((0, 4)), np.zeros(0), np.zeros(0))
        got = mine_rois(image, rec, props, mining, generator=gen, image_index=i)
        buf.append(got["hr"])
        buffered += len(got["hr"])
        for k in _META_ARRAYS:
            parts[k].append(got[k])
        flush(final=False)
    flush(final=True)
    if given and not usable:
        raise InputError(
            f"{source or 'proposals'}: none of the {given} proposal boxes is usable (each has "
            "zero width or height, or lies outside its image): the store would have no "
            "background ROIs; check the box format (COCO [x, y, w, h], WIDER 'x y w h score')"
        )
    hr = mining.hr_size
    empty = {"labels": (0,), "box_targets": (0, 4), "src_sizes": (0, 2), "boxes": (0, 4)}
    for k in _META_ARRAYS:
        arr = np.concatenate(parts[k]) if parts[k] else np.zeros(empty.get(k, (0,)))
        dtype = np.int64 if k in ("labels", "image_index") else np.float32
        np.save(tmp / f"{k}.npy", arr.astype(dtype))
    (tmp / "image_ids.json").write_text(json.dumps([r.image_id for r in records]))
    labels = np.concatenate(parts["labels"]) if parts["labels"] else np.zeros(0, np.int64)
    vals, counts = np.unique(labels, return_counts=True)
    return {
        "format_version": FORMAT_VERSION,
        "params": params,
        "hr_shape": [hr, hr, 3],
        "num_images": len(records),
        "num_rois": int(sum(shard_sizes)),
        "shard_sizes": shard_sizes,
        "label_counts": {str(int(v)): int(c) for v, c in zip(vals, counts, strict=True)},
    }


class RoiStoreDataset(Dataset[RoiBatch]):
    """One ROI per index as a :class:`RoiBatch` of length 1; join with ``RoiBatch.collate``.

    Shards are opened lazily with ``np.load(mmap_mode="r")`` in each process (the memmaps are
    dropped when pickled), so DataLoader workers and DDP samplers share the page cache. With
    ``hflip`` each item is mirrored with probability 1/2 (torch RNG, which DataLoader seeds per
    worker); the box target's dx changes sign because the crop is centred on the proposal.
    """

    def __init__(
        self,
        store_dir: str | os.PathLike[str],
        scale: int,
        hflip: bool = False,
        num_classes: int | None = None,
    ) -> None:
        self.store = Path(store_dir)
        meta = _read_meta(self.store)
        if meta is None:
            raise FileNotFoundError(f"no complete ROI store (meta.json) at {self.store}")
        if meta.get("format_version") != FORMAT_VERSION:
            raise InputError(f"{self.store}/meta.json: format_version {meta.get('format_version')}")
        hr = int(meta["hr_shape"][0])
        if hr % scale:
            raise InputError(f"{self.store}: hr size {hr} is not divisible by scale {scale}")
        self.meta, self.scale, self.hflip = meta, scale, hflip
        self.shard_size = int(meta["params"]["shard_size"])
        try:
            arrays = {k: np.load(self.store / f"{k}.npy") for k in _META_ARRAYS}
        except (OSError, ValueError, EOFError) as err:
            raise InputError(
                f"{self.store}: damaged ROI store ({' '.join(str(err).split())}); delete it to "
                "have it rebuilt"
            ) from None
        labels = arrays["labels"]
        if (
            num_classes is not None
            and len(labels)
            and (labels.min() < 0 or labels.max() > num_classes)
        ):
            raise InputError(
                f"{self.store / 'labels.npy'}: labels {int(labels.min())}..{int(labels.max())} "
                f"outside 0..{num_classes} (data.num_classes={num_classes}): a store of other "
                "data, or damaged; delete it to have it rebuilt"
            )
        self.labels = torch.from_numpy(arrays["labels"])
        self.box_targets = torch.from_numpy(arrays["box_targets"])
        self.src_sizes = torch.from_numpy(arrays["src_sizes"])
        self.boxes = arrays["boxes"]
        self.image_index = arrays["image_index"]
        self._shards: list[np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_shards"] = None  # a pickled memmap would copy its data
        return state

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def _hr(self, index: int) -> np.ndarray:
        if self._shards is None:
            self._shards = [self._open_shard(i) for i in range(len(self.meta["shard_sizes"]))]
        return self._shards[index // self.shard_size][index % self.shard_size]

    def _open_shard(self, i: int) -> np.ndarray:
        """Memory-map shard ``i``; a truncated or foreign file is an error naming it."""
        path = self.store / f"hr_{i:05d}.npy"
        want = (int(self.meta["shard_sizes"][i]), *map(int, self.meta["hr_shape"]))
        try:
            shard = np.load(path, mmap_mode="r")
        except (OSError, ValueError, EOFError) as err:
            raise InputError(
                f"{path}: damaged ROI store shard ({' '.join(str(err).split())}); delete "
                f"{self.store} to have it rebuilt"
            ) from None
        if shard.shape != want or shard.dtype != np.uint8:
            raise InputError(
                f"{path}: shard of shape {shard.shape} {shard.dtype}, meta.json says {want} "
                f"uint8; delete {self.store} to have it rebuilt"
            )
        return shard

    def __getitem__(self, index: int) -> RoiBatch:
        if not 0 <= index < len(self):
            raise IndexError(f"ROI index {index} out of range for {len(self)} ROIs")
        hr = hr_from_uint8(np.array(self._hr(index))[None])  # copy out of the memmap
        box_targets = self.box_targets[index : index + 1].clone()
        if self.hflip and bool(torch.rand(()) < 0.5):
            hr = hr.flip(-1)
            box_targets[:, 0] = -box_targets[:, 0]
        return RoiBatch(
            lr=make_lr(hr, self.scale),
            hr=hr,
            labels=self.labels[index : index + 1].clone(),
            box_targets=box_targets,
            src_sizes=self.src_sizes[index : index + 1].clone(),
        )

    def class_counts(self) -> dict[int, int]:
        """Number of ROIs per label (0 = background)."""
        vals, counts = np.unique(self.labels.numpy(), return_counts=True)
        return {int(v): int(c) for v, c in zip(vals, counts, strict=True)}


class OnTheFlyRoiDataset(Dataset[RoiBatch]):
    """Mines ROIs from the image file per item (one image -> up to ``rois_per_image`` ROIs).

    The reference the store is benchmarked against; same mining as :func:`build_roi_store`
    (item ``i`` draws its sample from a generator seeded by ``seed + i``).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        proposals: Mapping[str, Proposals] | None = None,
        params: MiningParams | None = None,
        *,
        seed: int = 0,
    ) -> None:
        self.records, self.proposals = list(records), proposals
        self.params = params if params is not None else MiningParams()
        self.scale, self.seed = self.params.scale, seed

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> RoiBatch:
        rec = self.records[index]
        image = load_image(rec.path)
        rec = rec.clipped_to(int(image.shape[1]), int(image.shape[2]))
        props = self.proposals.get(rec.image_id) if self.proposals is not None else None
        if props is None or len(props) == 0:
            size = (int(image.shape[1]), int(image.shape[2]))
            props = gt_jitter_proposals(rec, seed=self.seed + index, image_size=size)
        gen = torch.Generator().manual_seed(self.seed + index)
        got = mine_rois(image, rec, props, self.params, generator=gen, image_index=index)
        hr = hr_from_uint8(got["hr"])
        return RoiBatch(
            lr=make_lr(hr, self.scale),
            hr=hr,
            labels=torch.from_numpy(got["labels"]),
            box_targets=torch.from_numpy(got["box_targets"]),
            src_sizes=torch.from_numpy(got["src_sizes"]),
        )
