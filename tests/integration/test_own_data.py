"""Evaluating a trained run on your own WIDER-format images (docs/usage.md, "Evaluating a trained
run on your own images"): hints that name real keys, the loader checking the file it was given,
``data.root=`` moving a run's paths, ``gt_dir`` following ``data.root``, annotation-file ground
truth for ``wider-eval``, and the recipe itself run as written on real WIDER FACE images.

Needs ``widerface/`` of the shared data folder (``$GAN_DETECT_DATA`` or ``../shared/data``);
skipped otherwise.
"""

from __future__ import annotations

import re
import shlex
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from gan_detect.app.cli import main
from gan_detect.config.load import MovedDataRootWarning, load_config
from gan_detect.config.validate import to_container
from gan_detect.data.paths import shared_data_dir

DATA = shared_data_dir()
WIDER = None if DATA is None else DATA / "widerface"
USAGE = Path(__file__).resolve().parents[2] / "docs" / "usage.md"

# Train: small Handshaking scenes; own images: other events, so nothing is shared with the run.
TRAIN = [f"1--Handshaking/1_Handshaking_Handshaking_1_{n}" for n in (409, 389, 288, 924, 866, 164)]
RUN_VAL = ["4--Dancing/4_Dancing_Dancing_4_1000", "4--Dancing/4_Dancing_Dancing_4_1026"]
OWN = [
    "19--Couple/19_Couple_Couple_19_156",
    "19--Couple/19_Couple_Couple_19_910",
    "0--Parade/0_Parade_Parade_0_628",
]


def _wider() -> Path:
    if WIDER is None or not (WIDER / "WIDER_val" / "images").is_dir():
        pytest.skip("real WIDER FACE images not found (set GAN_DETECT_DATA or ../shared/data)")
    return WIDER


def _entries(split: str) -> dict[str, str]:
    """``event/name`` -> its block of the shared subset annotation file (name line included)."""
    lines = (_wider() / f"WIDER_{split}" / f"wider_face_{split}_bbx_gt.subset.txt").read_text()
    rows = lines.splitlines()
    out: dict[str, str] = {}
    i = 0
    while i < len(rows):
        n = int(rows[i + 1])
        out[rows[i].removesuffix(".jpg")] = "\n".join(rows[i : i + 2 + max(n, 1)]) + "\n"
        i += 2 + max(n, 1)
    return out


def write_tree(root: Path, split: str, src_split: str, ids: Sequence[str]) -> Path:
    """A WIDER FACE tree in the official layout: real images of ``src_split`` as ``split``."""
    entries = _entries(src_split)
    for image_id in ids:
        dest = root / f"WIDER_{split}" / "images" / f"{image_id}.jpg"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(_wider() / f"WIDER_{src_split}" / "images" / f"{image_id}.jpg", dest)
    ann = root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt"
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text("".join(entries[i] for i in ids))
    return root


def _records(
    *overrides: str, files: Sequence[str | Path] = ("tiny_face_wider", "smoke")
) -> list[str]:
    """The val image ids the WIDER DataModule of this config reads."""
    from gan_detect.data import build_datamodule

    cfg = load_config(files, list(overrides))
    dm = build_datamodule(cfg.data, scale=4)  # type: ignore[arg-type]
    return [r.image_id for r in dm.read_records("val")]


# ---- hints and the loader -------------------------------------------------------------------


def test_missing_annotation_file_hint_names_the_config_key(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "w", "val", "val", OWN)
    subset = root / "WIDER_val" / "wider_face_val_bbx_gt.subset.txt"
    (root / "wider_face_split" / "wider_face_val_bbx_gt.txt").rename(subset)
    with pytest.raises(FileNotFoundError) as err:
        _records(f"data.root={root}")
    msg = str(err.value)
    assert f"a subset file exists: data.val_annotation_file={subset}" in msg
    assert not re.search(r"(?<![\w.])annotation_file=", msg)  # only keys that exist
    assert sorted(_records(f"data.root={root}", f"data.val_annotation_file={subset}")) == sorted(
        OWN
    )


def test_the_loader_checks_the_file_it_was_given(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "w", "val", "val", OWN)
    mine = tmp_path / "mine.txt"  # anywhere: the official file under data.root is not needed
    (root / "wider_face_split" / "wider_face_val_bbx_gt.txt").rename(mine)
    assert sorted(_records(f"data.root={root}", f"data.val_annotation_file={mine}")) == sorted(OWN)
    with pytest.raises(FileNotFoundError, match=r"^data.val_annotation_file: .* not found: .*nope"):
        _records(f"data.root={root}", f"data.val_annotation_file={tmp_path / 'nope.txt'}")
    with pytest.raises(FileNotFoundError, match=r"^data.val_image_dir: .* not found: .*no_dir"):
        _records(
            f"data.root={root}",
            f"data.val_annotation_file={mine}",
            f"data.val_image_dir={tmp_path / 'no_dir'}",
        )
    with pytest.raises(FileNotFoundError, match=r"give yours with data.val_image_dir=PATH"):
        _records(f"data.root={tmp_path / 'empty'}", f"data.val_annotation_file={mine}")
    # COCO's loader: the given instances file, not the official one under data.root.
    from gan_detect.data.coco import coco_split_files

    (tmp_path / "imgs").mkdir()
    ann, images = coco_split_files(tmp_path / "nothing", "val2017", mine, tmp_path / "imgs", "val")
    assert (ann, images) == (mine, tmp_path / "imgs")
    with pytest.raises(FileNotFoundError, match=r"data.val_annotation_file=PATH"):
        coco_split_files(tmp_path / "nothing", "val2017", None, tmp_path / "imgs", "val")


def test_gt_dir_follows_data_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WIDER_ROOT", "/env/wider")
    assert load_config(["tiny_face_wider"]).data.gt_dir == "/env/wider/ground_truth"  # type: ignore[attr-defined]
    cfg = load_config(["tiny_face_wider"], ["data.root=/mine/wider"])
    assert cfg.data.gt_dir == "/mine/wider/ground_truth"  # type: ignore[attr-defined]


# ---- data.root= on a run's config.yaml ------------------------------------------------------


def _saved_run(tmp_path: Path, root: str, *extra: str) -> Path:
    """A run folder whose config.yaml holds resolved (absolute) val paths under ``root``."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    cfg = load_config(
        ["tiny_face_wider"],
        [
            f"output_dir={run}",
            f"data.root={root}",
            f"data.val_annotation_file={root}/wider_face_split/wider_face_val_bbx_gt.txt",
            f"data.val_image_dir={root}/WIDER_val/images",
            "data.val_proposals=/elsewhere/proposals_wider",
            *extra,
        ],
    )
    OmegaConf.save(OmegaConf.create(to_container(cfg)), run / "config.yaml")
    return run / "config.yaml"


def test_data_root_override_moves_the_paths_under_the_old_root(tmp_path: Path) -> None:
    saved = _saved_run(tmp_path, "/old/wider")
    with pytest.warns(MovedDataRootWarning) as caught:
        cfg = load_config([saved], ["data.root=/new/mine", "data.val_image_dir=/kept/images"])
    d = cfg.data
    assert d.val_annotation_file == "/new/mine/wider_face_split/wider_face_val_bbx_gt.txt"
    assert d.gt_dir == "/new/mine/ground_truth"  # type: ignore[attr-defined]
    assert d.val_image_dir == "/kept/images"  # given on the command line: that wins
    assert d.val_proposals == "/elsewhere/proposals_wider"  # not under the old root: kept
    (w,) = caught
    text = str(w.message)
    assert "\n" not in text and "data.val_annotation_file, data.gt_dir" in text
    assert "val_image_dir" not in text and "/old/wider" in text
    # A relative root moves the paths written with its absolute form too.
    rel = tmp_path / "rel"
    rel.mkdir()
    saved = _saved_run(rel, "data/wider", f"data.train_image_dir={Path.cwd()}/data/wider/x")
    with pytest.warns(MovedDataRootWarning):
        cfg = load_config([saved], ["data.root=/new"])
    assert cfg.data.val_image_dir == "/new/WIDER_val/images"
    assert cfg.data.train_image_dir == "/new/x"
    # The same root, or a preset's interpolated paths: nothing to say.
    with warnings.catch_warnings():
        warnings.simplefilter("error", MovedDataRootWarning)
        assert load_config([saved], ["data.root=data/wider/"]).data.root == "data/wider/"
        load_config(["tiny_face_wider"], ["data.root=/other"])


def test_evaluate_names_gt_dir_and_the_way_out_for_own_images(tmp_path: Path) -> None:
    from gan_detect.app.evaluate import _wider_gt
    from gan_detect.utils.errors import InputError

    with pytest.raises(FileNotFoundError, match=r"^data.gt_dir=.*give data.gt_dir=null"):
        _wider_gt(str(tmp_path / "nope"), {"19--Couple/x"})
    with pytest.raises(InputError, match=r"not in the WIDER FACE ground truth.*data.gt_dir=null"):
        _wider_gt(str(_wider() / "ground_truth"), {"99--Mine/photo"})


def test_wider_eval_takes_an_annotation_txt_as_ground_truth(tmp_path: Path) -> None:
    """Your own annotations as --gt: settings by face height, flagged not official; the ground
    truth's own boxes as predictions score AP 1 wherever a setting holds a face."""
    import json

    import numpy as np

    from gan_detect.data.proposals import write_wider_tree
    from gan_detect.data.records import Proposals
    from gan_detect.data.wider_face import read_wider_annotations

    ann = write_tree(tmp_path / "w", "val", "val", OWN) / "wider_face_split"
    txt = ann / "wider_face_val_bbx_gt.txt"
    recs = read_wider_annotations(txt).records
    # Distinct scores (equal ones are a degenerate curve the metric warns about).
    perfect = {
        r.image_id: Proposals(r.boxes, np.linspace(1, 0.5, len(r.boxes)), np.ones(len(r.boxes)))
        for r in recs
    }
    write_wider_tree(perfect, tmp_path / "pred")
    out = tmp_path / "ap.json"
    with pytest.warns(UserWarning, match="not comparable"):
        assert main(["wider-eval", str(tmp_path / "pred"), f"--gt={txt}", f"--json={out}"]) == 0
    ap = json.loads(out.read_text())
    assert ap["official_gt_list"] is False and ap["num_images"] == len(OWN)
    assert ap["ap_easy"] == pytest.approx(1.0) and ap["ap_hard"] == pytest.approx(1.0)


# ---- the recipe, as written -----------------------------------------------------------------

MARK = "<!-- own-data-test -->"


def recipe_commands() -> list[list[str]]:
    """The marked bash block of docs/usage.md: continuations joined, comments dropped."""
    text = USAGE.read_text()
    m = re.search(re.escape(MARK) + r"\n```bash\n(.*?)^```", text, re.M | re.S)
    assert m, f"{USAGE} has no block marked {MARK}"
    cmds = []
    for line in m.group(1).replace("\\\n", " ").splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            argv = shlex.split(line)
            assert argv[0] == "gan-detect", line
            cmds.append(argv[1:])
    return cmds


@pytest.mark.filterwarnings("ignore:WIDER FACE settings from face heights")  # said, expected
def test_the_usage_recipe_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A quickly trained run (real train images, its own val set), then docs/usage.md's commands
    on ``my_wider/``, three other real images: the metrics are of those three, not the run's."""
    import json

    train_root = write_tree(tmp_path / "train_wider", "train", "train", TRAIN)
    write_tree(train_root, "val", "val", RUN_VAL)
    monkeypatch.chdir(tmp_path)
    write_tree(tmp_path / "my_wider", "val", "val", OWN)
    run = tmp_path / "runs" / "my_run"
    # Absolute val paths in the run's config.yaml: what the data.root override must move.
    fit = [
        "fit", "tiny_face_wider", "smoke", f"data.root={train_root}",
        f"data.val_annotation_file={train_root}/wider_face_split/wider_face_val_bbx_gt.txt",
        f"data.val_image_dir={train_root}/WIDER_val/images",
        "data.max_train_images=6", "data.rois_per_image=8", "data.batch_size=16",
        f"data.cache_dir={tmp_path / 'cache'}", "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false", "evaluate.top_k=50", "evaluate.bootstrap=50",
        f"output_dir={run}",
    ]  # fmt: skip
    assert main(fit) == 0, capsys.readouterr().err[-2000:]
    assert "wider_face_val_bbx_gt.txt" in (run / "config.yaml").read_text()
    capsys.readouterr()
    cmds = recipe_commands()
    assert [c[0] for c in cmds] == ["propose", "evaluate", "predict", "wider-eval"]
    for argv in cmds:
        if argv[0] == "wider-eval":
            argv = [*argv, "--json=ap.json"]
        assert main(argv) == 0, (argv, capsys.readouterr().err[-3000:])
    saved = tmp_path / "my_wider" / "eval_my_run" / "eval" / "metrics.json"
    result = json.loads(saved.read_text())
    assert result["num_images"] == len(OWN) and not result["official_wider_settings"]
    metrics = result["metrics"]
    for method in ("baseline", "gan"):
        assert 0 < metrics[method]["ap_easy"] <= 1, method
    # The built-in RetinaFace alone finds these faces (measured easy 0.99 by face height).
    assert metrics["baseline"]["ap_easy"] > 0.8
    ap = json.loads((tmp_path / "ap.json").read_text())
    assert ap["num_images"] == len(OWN) and ap["missing"] == 0 and not ap["official_gt_list"]
    assert 0 < ap["ap_easy"] <= 1
    # data.root= alone on the run's config.yaml: its absolute val paths move to my_wider (one
    # warning lists them), so my images are read, not the run's val set.
    with pytest.warns(MovedDataRootWarning, match="data.val_annotation_file, data.val_image_dir"):
        ids = _records("data.root=my_wider", files=[run / "config.yaml"])
    assert sorted(ids) == sorted(OWN)
