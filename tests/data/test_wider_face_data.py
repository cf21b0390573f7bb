"""WIDER FACE annotation parser: official-format edge cases on small files, and real-data counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gan_detect.data.paths import shared_data_dir
from gan_detect.data.wider_face import (
    filter_events,
    list_events,
    parse_wider_annotations,
    read_wider_annotations,
    wider_split_paths,
)

# Three images: 2 faces (one invalid), the train zero-face convention, the val one.
GOOD = """0--Parade/0_Parade_a_1.jpg
2
10 20 30 40 1 0 0 0 2 0 
5 6 7 8 0 0 0 1 0 0 
1--Handshaking/1_Handshaking_b_2.jpg
0
0 0 0 0 0 0 0 0 0 0 
1--Handshaking/1_Handshaking_c_3.jpg
1
0 0 0 0 0 0 0 0 0 0 
"""  # noqa: W291 (the official files end rows with a space)


def _write(tmp_path: Path, text: str, name: str = "gt.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_parse_boxes_labels_ignore_and_attributes(tmp_path: Path) -> None:
    ann = read_wider_annotations(_write(tmp_path, GOOD), images_dir=tmp_path / "images")
    recs = ann.records
    assert [r.image_id for r in recs] == [
        "0--Parade/0_Parade_a_1",
        "1--Handshaking/1_Handshaking_b_2",
        "1--Handshaking/1_Handshaking_c_3",
    ]
    r = recs[0]
    np.testing.assert_array_equal(r.boxes, [[10, 20, 40, 60], [5, 6, 12, 14]])
    assert r.boxes.dtype == np.float32 and r.labels.dtype == np.int64
    np.testing.assert_array_equal(r.labels, [1, 1])
    np.testing.assert_array_equal(r.ignore, [False, True])  # invalid=1 -> ignore, kept
    assert r.path == str(tmp_path / "images" / "0--Parade" / "0_Parade_a_1.jpg")
    np.testing.assert_array_equal(
        ann.attributes[r.image_id], [[1, 0, 0, 0, 2, 0], [0, 0, 0, 1, 0, 0]]
    )


def test_zero_face_entries_both_conventions_give_no_boxes(tmp_path: Path) -> None:
    ann = read_wider_annotations(_write(tmp_path, GOOD))
    for r in ann.records[1:]:
        assert r.boxes.shape == (0, 4) and len(r.labels) == 0 and len(r.ignore) == 0
    # Rows counted as the official .mat counts them (the all-zero row of each zero-face image).
    assert ann.num_rows == 4 and ann.num_dropped == 2


def test_zero_count_without_placeholder_row_is_accepted(tmp_path: Path) -> None:
    text = "a--A/x.jpg\n0\nb--B/y.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n"
    recs = parse_wider_annotations(_write(tmp_path, text))
    assert len(recs) == 2 and len(recs[0].boxes) == 0 and len(recs[1].boxes) == 1


def test_zero_size_boxes_are_dropped(tmp_path: Path) -> None:
    text = "a--A/x.jpg\n3\n1 2 0 4 0 0 0 0 0 0\n1 2 3 -1 0 0 0 0 0 0\n1 2 3 4 0 0 0 0 0 0\n"
    ann = read_wider_annotations(_write(tmp_path, text))
    np.testing.assert_array_equal(ann.records[0].boxes, [[1, 2, 4, 6]])
    assert ann.num_rows == 3 and ann.num_dropped == 2


@pytest.mark.parametrize(
    ("text", "lineno", "fragment"),
    [
        ("a--A/x.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n1 2 3 4 0 0 0\n", 4, "expected 10 fields"),
        ("a--A/x.jpg\n1\n1 2 3 four 0 0 0 0 0 0\n", 3, "non-numeric"),
        ("a--A/x.jpg\none\n", 2, "face count"),
        ("a--A/x.jpg\n-1\n", 2, "negative"),
        ("a--A/x.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n1 2 3 4 0 0 0 0 0 0\n", 4, "image path"),
        ("a--A/x.jpg\n1\n1 2 3 4 0.5 0 0 0 0 0\n", 3, "integers"),
        ("a--A/x.jpg\n0\n1 2 3 4 0 0 0 0 0 0\n", 3, "non-zero box row"),
        ("a--A/x.jpg\n1\n1 2 3 4 0 0 0 0 0 0\na--A/x.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n", 4, "already"),
        # count larger than the rows that follow: the next image's path is read as a box row
        ("a--A/x.jpg\n3\n1 2 3 4 0 0 0 0 0 0\nb--B/y.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n", 4, "larger"),
    ],
)
def test_malformed_lines_raise_with_file_and_line(
    tmp_path: Path, text: str, lineno: int, fragment: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match=fragment) as info:
        parse_wider_annotations(path)
    assert f"{path}:{lineno}:" in str(info.value)


def test_truncated_file_raises_at_last_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "a--A/x.jpg\n3\n1 2 3 4 0 0 0 0 0 0\n1 2 3 4 0 0 0 0 0 0\n")
    with pytest.raises(ValueError, match=r"gt\.txt:4: file ends here.*box row 3 of 3"):
        parse_wider_annotations(path)
    with pytest.raises(ValueError, match=r"gt\.txt:2: file ends here.*face count"):
        parse_wider_annotations(_write(tmp_path, "a--A/x.jpg\n\n"))


def test_check_images_names_missing_file_and_reads_sizes(tmp_path: Path) -> None:
    images = tmp_path / "images"
    (images / "0--Parade").mkdir(parents=True)
    Image.new("RGB", (64, 48)).save(images / "0--Parade" / "0_Parade_a_1.jpg")
    path = _write(tmp_path, GOOD)
    with pytest.raises(FileNotFoundError, match="1_Handshaking_b_2.jpg"):
        parse_wider_annotations(path, images, check_images=True)
    recs = parse_wider_annotations(
        _write(tmp_path, GOOD.split("1--Hand")[0], "one.txt"), images, True
    )
    assert (recs[0].width, recs[0].height) == (64, 48)


def test_split_paths_official_layout_override_and_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="wider_face_val_bbx_gt.txt"):
        wider_split_paths(tmp_path, "val")
    (tmp_path / "wider_face_split").mkdir()
    _write(tmp_path / "wider_face_split", GOOD, "wider_face_val_bbx_gt.txt")
    with pytest.raises(FileNotFoundError, match=r"WIDER_val[/\\]images"):
        wider_split_paths(tmp_path, "val")
    (tmp_path / "WIDER_val" / "images").mkdir(parents=True)
    txt, images = wider_split_paths(tmp_path, "val")
    assert txt == tmp_path / "wider_face_split" / "wider_face_val_bbx_gt.txt"
    assert images == tmp_path / "WIDER_val" / "images"
    _write(tmp_path / "WIDER_val", GOOD, "wider_face_val_bbx_gt.subset.txt")
    txt, _ = wider_split_paths(tmp_path, "val", "WIDER_val/wider_face_val_bbx_gt.subset.txt")
    assert txt == tmp_path / "WIDER_val" / "wider_face_val_bbx_gt.subset.txt"
    with pytest.raises(ValueError, match="test"):
        wider_split_paths(tmp_path, "test")


def test_filter_events_by_name_or_number(tmp_path: Path) -> None:
    recs = parse_wider_annotations(_write(tmp_path, GOOD))
    assert list_events(recs) == ["0--Parade", "1--Handshaking"]
    assert [r.image_id for r in filter_events(recs, include=["0--Parade"])] == [recs[0].image_id]
    assert len(filter_events(recs, include=[1])) == 2
    assert len(filter_events(recs, exclude=["1"])) == 1
    with pytest.raises(ValueError, match="unknown WIDER FACE event '7--Nope'"):
        filter_events(recs, include=["7--Nope"])


# ---- real data (skipped when absent) ----------------------------------------------------------


def _widerface() -> Path:
    root = shared_data_dir()
    if root is None or not (root / "widerface").is_dir():
        pytest.skip("real WIDER FACE data not found (set GAN_DETECT_DATA or use ../shared/data)")
    return root / "widerface"


def test_real_val_annotations_counts() -> None:
    ann = read_wider_annotations(_widerface() / "wider_face_split" / "wider_face_val_bbx_gt.txt")
    assert len(ann.records) == 3226
    # 39708 rows = the official box count (it includes the 4 all-zero zero-face rows); 11 rows
    # have w or h <= 0 (those 4 + 7 degenerate boxes) and are dropped.
    assert ann.num_rows == 39708 and ann.num_dropped == 11
    assert sum(len(r.boxes) for r in ann.records) == 39697
    assert sum(int(r.ignore.sum()) for r in ann.records) == 585
    assert sum(len(r.boxes) == 0 for r in ann.records) == 4
    assert len(list_events(ann.records)) == 61


@pytest.mark.slow
def test_real_train_annotations_counts() -> None:
    ann = read_wider_annotations(_widerface() / "wider_face_split" / "wider_face_train_bbx_gt.txt")
    assert len(ann.records) == 12880
    assert ann.num_rows == 159424 and ann.num_dropped == 31
    assert sum(len(r.boxes) for r in ann.records) == 159393


@pytest.mark.parametrize(("split", "images", "rows"), [("val", 276, 4986), ("train", 1067, 5696)])
def test_real_subset_files_and_images(split: str, images: int, rows: int) -> None:
    root = _widerface()
    sub = f"WIDER_{split}/wider_face_{split}_bbx_gt.subset.txt"
    txt, img_dir = wider_split_paths(root, split, annotation_file=sub)
    ann = read_wider_annotations(txt, img_dir, check_images=True)
    assert len(ann.records) == images and ann.num_rows == rows
    for r in ann.records:  # every face lies inside its (1024 px wide) image
        assert r.width == 1024
        if len(r.boxes):
            assert r.boxes[:, 2].max() <= r.width and r.boxes[:, 3].max() <= r.height


def test_boxes_over_the_border_are_clipped_when_the_image_is_read(tmp_path: Path) -> None:
    """The WIDER file has no image sizes: a box running outside keeps its inside part, one
    wholly outside is dropped with a warning naming the image (issue 14, item 12)."""
    import numpy as np
    import pytest
    from PIL import Image

    from gan_detect.data.full_image import FullImageDataset
    from gan_detect.data.wider_face import read_wider_annotations

    img_dir = tmp_path / "images" / "0--Parade"
    img_dir.mkdir(parents=True)
    Image.new("RGB", (40, 30), (90, 90, 90)).save(img_dir / "a.jpg")
    txt = tmp_path / "gt.txt"
    # inside; over the right/bottom edge; over the left edge; wholly outside (x >= 40)
    txt.write_text(
        "0--Parade/a.jpg\n4\n"
        "2 2 10 10 0 0 0 0 0 0\n"
        "35 25 10 10 0 0 0 0 0 0\n"
        "-5 3 8 6 0 0 0 1 0 0\n"  # invalid = 1: an ignore region
        "45 5 6 6 0 0 0 0 0 0\n"
    )
    ann = read_wider_annotations(txt, tmp_path / "images")
    rec = ann.records[0] if hasattr(ann, "records") else ann[0]
    assert len(rec.boxes) == 4  # parse time: nothing known about the image size
    with pytest.warns(UserWarning, match=r"a\.jpg: 1 annotated box\(es\) lie wholly outside"):
        item = FullImageDataset([rec])[0]
    boxes = item.targets[0]["boxes"].numpy()
    np.testing.assert_allclose(boxes, [[2, 2, 12, 12], [35, 25, 40, 30], [0, 3, 3, 9]])
    assert item.targets[0]["ignore"].tolist() == [False, False, True]  # attributes follow
    big = rec.clipped_to(100, 100)  # a larger image: only the left box is clipped, none lost
    assert len(big.boxes) == 4 and big.boxes[2, 0] == 0 and big.boxes[3, 0] == 45
    assert big.clipped_to(100, 100) is big  # nothing outside: the record itself comes back
