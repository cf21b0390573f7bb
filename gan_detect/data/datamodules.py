"""WIDER FACE and COCO DataModules: ROI batches for training, full images for detection metrics.

Both share :class:`RoiDataModule`; they differ only in how annotation records are read. The
ROI stores are built once in ``prepare_data`` (rank 0 of each node) and memory-mapped by all ranks.
"""

from __future__ import annotations

import hashlib
import sys
from abc import abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import lightning as L
from torch.utils.data import DataLoader, DistributedSampler

from gan_detect.config.sections import (
    DATA_CONFIGS,
    CocoDataConfig,
    RoiDataConfig,
    WiderFaceDataConfig,
)
from gan_detect.data.batch import DetectionBatch, RoiBatch
from gan_detect.data.full_image import FullImageDataset
from gan_detect.data.records import ImageRecord, Proposals
from gan_detect.utils.errors import InputError
from gan_detect.utils.registry import Registry


def check_proposals_match(
    props: dict[str, Proposals], records: list[ImageRecord], source: str
) -> None:
    """Fail when no proposal belongs to an image of the split (other ids, a wrong-level tree).

    Images without proposals would silently fall back to ground-truth jitter in training and
    score AP 0 in evaluation.

    Raises:
        ValueError: with the counts (images with proposals read, images matched) and id examples.
    """
    ids = {r.image_id for r in records}
    matched = ids.intersection(props)
    if matched or not records:
        return
    hint = (
        "no proposals at all (an empty file, or a WIDER tree at the wrong folder level: it must "
        "hold <event>/<name>.txt)"
        if not props
        else f"proposal ids look like {sorted(props)[:3]}, image ids like {sorted(ids)[:3]}"
    )
    raise InputError(
        f"{source}: proposals read for {len(props)} images, 0 of them match the "
        f"{len(records)} images of the split; {hint}"
    )


def fusion_holdout_ids(records: Sequence[ImageRecord], fraction: float) -> set[str]:
    """Image ids held out of GAN training for fitting score fusion: a fixed hash of each id (the
    same images whatever the seed or the image order), at least one image when ``fraction > 0``."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"data.fusion_holdout_fraction must be in [0, 1), got {fraction}")
    if fraction == 0 or not records:
        return set()

    def key(image_id: str) -> float:
        digest = hashlib.sha1(image_id.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") / 2.0**64

    held = {r.image_id for r in records if key(r.image_id) < fraction}
    return held or {min(records, key=lambda r: key(r.image_id)).image_id}


def check_partial_proposals(
    props: dict[str, Proposals], records: list[ImageRecord], source: str, missing: str
) -> None:
    """Images of the split that the proposals do not list: an error, or the printed choice.

    Raises:
        InputError: some images have no proposals and ``missing`` is "error" (counts, examples).
    """
    absent = [r.image_id for r in records if r.image_id not in props]
    if not absent:
        return
    what = f"{len(absent)} of the {len(records)} images of the split (e.g. {absent[:3]})"
    if missing == "error":
        raise InputError(
            f"{source}: no proposals for {what}: give proposals for every image, or set "
            "data.missing_proposals=jitter (ground-truth jitter for those) or =none (only their "
            "ground-truth ROIs)"
        )
    how = "ground-truth jitter proposals" if missing == "jitter" else "no proposals"
    print(f"data.missing_proposals={missing}: {how} for {what} missing from {source}")


class _DataModuleRegistry(Registry[type["RoiDataModule"]]):
    """DataModule classes by name, with their Configs kept in step in ``DATA_CONFIGS``."""

    def _check_add(self, name: str, cls: type[RoiDataModule]) -> None:
        config = getattr(cls, "Config", None)
        if getattr(cls, "name", None) != name or not isinstance(config, type):
            raise ValueError(f"datamodule {name!r}: the class needs name = {name!r} and a Config")
        if not issubclass(config, RoiDataConfig) or config().name != name:
            raise ValueError(f"datamodule {name!r}: its Config must be a RoiDataConfig with "
                             f"name: str = {name!r}")  # fmt: skip
        DATA_CONFIGS[name] = config  # refused if another Config holds the name

    def _on_remove(self, name: str, cls: type[RoiDataModule]) -> None:
        if DATA_CONFIGS.get(name) is cls.Config:
            del DATA_CONFIGS[name]


DATAMODULES: Registry[type[RoiDataModule]] = _DataModuleRegistry("datamodule")
D = TypeVar("D", bound=type["RoiDataModule"])


def register_datamodule(name: str) -> Callable[[D], D]:
    """Class decorator: add a :class:`RoiDataModule` (and its Config) under ``name``."""
    return DATAMODULES.register(name)


class RoiDataModule(L.LightningDataModule):
    """Base DataModule: records -> ROI stores -> loaders. Subclasses read the records."""

    name: ClassVar[str]  # type: ignore[misc]
    Config: ClassVar[type[RoiDataConfig]]

    def __init__(self, cfg: RoiDataConfig, scale: int = 4, seed: int = 0) -> None:
        super().__init__()
        if cfg.hr_size % scale:
            raise InputError(f"data.hr_size ({cfg.hr_size}) must be a multiple of scale ({scale})")
        self.cfg = cfg
        self.scale = scale
        self.seed = seed
        self.train_store: Path | None = None
        self.val_store: Path | None = None
        self._records: dict[str, list[ImageRecord]] = {}

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    # ---- records and proposals ---------------------------------------------------------------
    @abstractmethod
    def read_records(self, split: str) -> list[ImageRecord]:
        """Parse the split's annotations (``split`` is "train" or "val")."""

    def class_names(self) -> list[str]:
        return (
            ["face"]
            if self.cfg.num_classes == 1
            else [str(i) for i in range(1, self.cfg.num_classes + 1)]
        )

    def category_id_to_label(self) -> dict[int, int] | None:
        return None

    def records(self, split: str) -> list[ImageRecord]:
        """The split's images. ``"fusion"``: the held-out part of the train split
        (``fusion_holdout_fraction``), which ``"train"`` then leaves out: D never trains on it, so
        a score combiner fit there sees D's scores as they are on unseen images."""
        if split not in self._records:
            source = "train" if split == "fusion" else split
            recs = self.read_records(source)
            limit = self.cfg.max_train_images if source == "train" else self.cfg.max_val_images
            if limit is not None:
                recs = recs[:limit]
            if source == "train" and self.cfg.fusion_holdout_fraction > 0:
                held = fusion_holdout_ids(recs, self.cfg.fusion_holdout_fraction)
                recs = [r for r in recs if (r.image_id in held) == (split == "fusion")]
            elif split == "fusion":
                recs = []
            self._records[split] = recs
        return self._records[split]

    def proposals(self, split: str) -> dict[str, Proposals] | None:
        from gan_detect.data.proposals import load_proposals

        path = self.cfg.train_proposals if split in ("train", "fusion") else self.cfg.val_proposals
        if path is None:
            return None
        props = load_proposals(
            path, top_k=self.cfg.top_k, category_id_to_label=self.category_id_to_label()
        )
        source = f"data.{split}_proposals={path}"
        check_proposals_match(props, self.records(split), source)
        check_partial_proposals(props, self.records(split), source, self.cfg.missing_proposals)
        return props

    # ---- ROI stores --------------------------------------------------------------------------
    def _store(self, split: str, is_main: bool = True) -> Path:
        from gan_detect.data.roi import MiningParams
        from gan_detect.data.roi_store import build_roi_store

        c = self.cfg
        out = Path(c.cache_dir) / f"{self.name}_{split}_rois"
        props = self.proposals(split)
        path = c.train_proposals if split == "train" else c.val_proposals
        return build_roi_store(
            self.records(split),
            props,
            out,
            MiningParams.from_config(c, self.scale),
            # No proposals file: jitter is the documented stand-in; with one, only by choice.
            jitter_when_missing=props is None or c.missing_proposals == "jitter",
            source=f"data.{split}_proposals={path}",
            seed=self.seed,
            is_main=is_main,
        )

    def prepare_data(self) -> None:
        self._store("train")
        if self.cfg.val_rois:
            self._store("val")

    def setup(self, stage: str | None = None) -> None:
        is_main = self.trainer is None or self.trainer.local_rank == 0
        if stage in (None, "fit"):
            self.train_store = self._store("train", is_main=is_main)
        if self.cfg.val_rois and stage in (None, "fit", "validate"):
            self.val_store = self._store("val", is_main=is_main)

    # ---- loaders -----------------------------------------------------------------------------
    def _world(self) -> tuple[int, int]:
        if self.trainer is None:
            return 1, 0
        return self.trainer.world_size, self.trainer.global_rank

    def train_dataloader(self) -> DataLoader[Any]:
        from gan_detect.data.roi_store import RoiStoreDataset

        if self.train_store is None:
            self.setup("fit")
        assert self.train_store is not None
        ds = RoiStoreDataset(
            self.train_store,
            scale=self.scale,
            hflip=self.cfg.hflip,
            num_classes=self.cfg.num_classes,
        )
        world, rank = self._world()
        # Our own DistributedSampler (also for one process): seeded by seed + epoch, so a resumed
        # run sees the same order as an uninterrupted one; Lightning calls set_epoch on it.
        sampler: DistributedSampler[Any] = DistributedSampler(
            ds, num_replicas=world, rank=rank, shuffle=True, seed=self.seed, drop_last=True
        )
        return DataLoader(
            ds,
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            collate_fn=RoiBatch.collate,
            num_workers=self.cfg.num_workers,
            drop_last=True,
            persistent_workers=self.cfg.num_workers > 0,
        )

    def val_dataloader(self) -> list[DataLoader[Any]]:
        from gan_detect.data.roi_store import RoiStoreDataset

        loaders: list[DataLoader[Any]] = []
        world, rank = self._world()
        if self.cfg.val_rois:
            if self.val_store is None:
                self.setup("validate")
            assert self.val_store is not None
            ds = RoiStoreDataset(
                self.val_store, scale=self.scale, hflip=False, num_classes=self.cfg.num_classes
            )
            sampler: DistributedSampler[Any] = DistributedSampler(
                ds, num_replicas=world, rank=rank, shuffle=False
            )
            loaders.append(
                DataLoader(
                    ds,
                    batch_size=self.cfg.batch_size,
                    sampler=sampler,
                    collate_fn=RoiBatch.collate,
                    num_workers=self.cfg.num_workers,
                )
            )
        if self.cfg.val_detection:
            loaders.append(self.detection_dataloader("val"))
        return loaders

    def detection_dataset(self, split: str = "val") -> FullImageDataset:
        return FullImageDataset(self.records(split), self.proposals(split), top_k=self.cfg.top_k)

    def detection_dataloader(self, split: str = "val", shuffle: bool = False) -> DataLoader[Any]:
        """Full images (``val_batch_size`` per batch): detection metrics, detector training."""
        ds = self.detection_dataset(split)
        world, rank = self._world()
        # DistributedSampler pads to equal shards; the WIDER metric de-duplicates by image id.
        sampler: DistributedSampler[Any] = DistributedSampler(
            ds, num_replicas=world, rank=rank, shuffle=shuffle, seed=self.seed, drop_last=shuffle
        )
        return DataLoader(
            ds,
            batch_size=self.cfg.val_batch_size,
            sampler=sampler,
            collate_fn=DetectionBatch.collate,
            num_workers=self.cfg.num_workers,
        )


@register_datamodule("wider_face")
class WiderFaceDataModule(RoiDataModule):
    """Faces (1 class); invalid faces are ignore regions, never negatives."""

    name = "wider_face"  # type: ignore[misc]
    Config = WiderFaceDataConfig

    def read_records(self, split: str) -> list[ImageRecord]:
        from gan_detect.data.wider_face import read_wider_annotations, wider_split_files

        c = self.cfg
        assert isinstance(c, WiderFaceDataConfig)
        official = c.train_split if split == "train" else c.val_split
        given = c.train_annotation_file if split == "train" else c.val_annotation_file
        given_dir = c.train_image_dir if split == "train" else c.val_image_dir
        # The given file and folder are the ones checked (the official layout only for what is
        # not given), and a miss names the data.<split>_* key that chooses it.
        txt, img_dir = wider_split_files(c.root, official, given, given_dir, key=split)
        ann = str(txt)
        parsed = read_wider_annotations(txt, img_dir)
        if parsed.num_zero_size:
            print(
                f"{ann}: dropped {parsed.num_zero_size} of {parsed.num_rows} box rows with zero "
                f"width or height (besides {parsed.num_placeholders} zero-face placeholder rows)",
                file=sys.stderr,
            )
        recs = parsed.records
        events = c.train_events if split == "train" else c.val_events
        if events is not None:
            from gan_detect.data.wider_face import filter_events

            try:  # a typo must not train on 0 images: unknown names are an error
                recs = filter_events(recs, include=events)
            except ValueError as err:
                raise InputError(
                    f"data.{split}_events: {err} (data.{split}_events=null: every event)"
                ) from None
        return recs


@register_datamodule("coco")
class CocoDataModule(RoiDataModule):
    """COCO objects; crowd boxes are ignore regions; contiguous labels 1..C by category id."""

    name = "coco"  # type: ignore[misc]
    Config = CocoDataConfig

    def __init__(self, cfg: RoiDataConfig, scale: int = 4, seed: int = 0) -> None:
        super().__init__(cfg, scale, seed)
        self._coco_meta: dict[str, Any] = {}

    def _load(self, split: str) -> Any:
        from gan_detect.data.coco import coco_split_files, load_coco_records

        if split not in self._coco_meta:
            c = self.cfg
            official = c.train_split if split == "train" else c.val_split
            ann = c.train_annotation_file if split == "train" else c.val_annotation_file
            img_dir = c.train_image_dir if split == "train" else c.val_image_dir
            a, i = coco_split_files(c.root, official, ann, img_dir, key=split)
            ann = str(a)
            loaded = load_coco_records(a, i)
            if loaded.num_dropped or loaded.num_outside or loaded.num_clipped:
                print(
                    f"{ann}: dropped {loaded.num_dropped} annotations with zero width or height "
                    f"and {loaded.num_outside} wholly outside their image; clipped "
                    f"{loaded.num_clipped} that ran over the image border",
                    file=sys.stderr,
                )
            if len(loaded.class_names) != c.num_classes:
                raise InputError(
                    f"data.num_classes is {c.num_classes} but {ann} has "
                    f"{len(loaded.class_names)} categories; set data.num_classes="
                    f"{len(loaded.class_names)}"
                )
            self._coco_meta[split] = loaded
        return self._coco_meta[split]

    def read_records(self, split: str) -> list[ImageRecord]:
        return list(self._load(split).records)

    def class_names(self) -> list[str]:
        return list(self._load("val" if self.cfg.val_annotation_file else "train").class_names)

    def category_ids(self) -> list[int]:
        return list(self._load("train").category_ids)

    def category_id_to_label(self) -> dict[int, int] | None:
        return dict(self._load("train").category_id_to_label)
