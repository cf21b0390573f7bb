"""Full-image dataset over :class:`ImageRecord` s, for detection training, validation and tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from gan_detect.data.batch import DetectionBatch
from gan_detect.data.image_io import load_image
from gan_detect.data.records import ImageRecord, Proposals

__all__ = ["FullImageDataset", "load_image"]  # load_image: the one reader (data.image_io)


class FullImageDataset(Dataset[DetectionBatch]):
    """Yields one-image :class:`DetectionBatch` items; join them with ``DetectionBatch.collate``.

    Args:
        records: annotated images.
        proposals: optional detector output per ``image_id`` (images without an entry get none).
        top_k: keep at most this many proposals per image (highest scores first).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        proposals: Mapping[str, Proposals] | None = None,
        top_k: int = 600,
    ) -> None:
        self.records = list(records)
        self.proposals = proposals
        self.top_k = top_k

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> DetectionBatch:
        rec = self.records[index]
        image = load_image(rec.path)
        rec = rec.clipped_to(int(image.shape[1]), int(image.shape[2]))
        target = {
            "boxes": torch.from_numpy(rec.boxes.copy()),
            "labels": torch.from_numpy(rec.labels.copy()),
            "ignore": torch.from_numpy(rec.ignore.copy()),
            # Annotated areas (0: none), so AP's size buckets are COCO's (coco_metric_inputs).
            "area": torch.from_numpy(rec.areas.copy()),
        }
        props = None
        if self.proposals is not None:
            p = self.proposals.get(rec.image_id)
            if p is None:
                p = Proposals(np.zeros((0, 4)), np.zeros(0), np.zeros(0))
            p = p.top_k(self.top_k)
            props = [
                {
                    "boxes": torch.from_numpy(p.boxes),
                    "scores": torch.from_numpy(p.scores),
                    "labels": torch.from_numpy(p.labels),
                }
            ]
        return DetectionBatch([image], [target], props, [rec.image_id])
