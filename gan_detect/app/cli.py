"""Command line: ``gan-detect fit|validate|evaluate|propose|demo|compare|predict|config ...``.

Commands read YAML and ``key=value`` overrides (the form W&B sweep agents pass with
``${args_no_hyphens}``) through :func:`gan_detect.config.load.load_config`: files are merged left
to right, overrides last, then validated against the structured schema.

Argument parsing and ``--help`` happen before torch or Lightning is imported (every command
imports its heavy modules inside its function), so ``gan-detect CMD --help`` answers in well under
a second.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from gan_detect.config import PRESETS, ExperimentConfig
from gan_detect.config.load import load_config as _load_config
from gan_detect.config.load import load_raw_config
from gan_detect.config.validate import ConfigError, to_container
from gan_detect.utils.quiet import VERBOSE_ENV, quiet_lightning


def load_config(files: Sequence[str | Path], overrides: Sequence[str] = ()) -> ExperimentConfig:
    """``config.load.load_config``; a variant name the torch-free config table does not know
    (one added to ``gan_detect/variants``) is looked up once in the variant table, which
    registers every variant's Config, before the error stands."""
    try:
        return _load_config(files, overrides)
    except ConfigError as err:
        if "unknown variant" not in str(err):
            raise
        import gan_detect.variants  # noqa: F401  (registers the variants' Configs)

        return _load_config(files, overrides)


def _is_override(arg: str) -> bool:
    """``key=value``; a path with ``=`` in it (``runs/lr=0.1/config.yaml``) is a file."""
    key = arg.split("=", 1)[0]
    return "=" in arg and "/" not in key and os.sep not in key and not Path(arg).is_file()


def _split_args(args: Sequence[str]) -> tuple[list[str], list[str]]:
    files = [a for a in args if not _is_override(a)]
    overrides = [a for a in args if _is_override(a)]
    return files, overrides


def _resolve_resume(cfg: ExperimentConfig) -> str | None:
    if cfg.resume not in (None, "auto") and not Path(cfg.resume).is_file():
        raise FileNotFoundError(f"resume checkpoint not found: {cfg.resume}")
    from gan_detect.train.resume import resume_checkpoint

    found = resume_checkpoint(cfg)
    if cfg.resume == "auto":  # say which, so a fresh start is never mistaken for a resume
        what = f"continuing from {found}" if found else "no checkpoint yet: starting at epoch 0"
        print(f"resume=auto in {cfg.output_dir}: {what}", file=sys.stderr)
    return found


# --- help texts (no torch: only the config dataclasses and the experiments/ folder are read) ---

# Keys most runs set; `gan-detect config show FILES --keys` lists all of them.
COMMON_KEYS = [
    ("data.root", "dataset folder (WIDER FACE or COCO layout)"),
    ("output_dir", "run folder: checkpoints, config.yaml, logs, eval/"),
    ("trainer.max_epochs", "epochs"),
    ("trainer.devices / trainer.accelerator", "e.g. devices=4 accelerator=gpu"),
    ("trainer.precision", "32-true, bf16-mixed, 16-mixed"),
    ("data.batch_size", "ROIs (or images for the detector) per batch"),
    ("optim.lr_g / optim.lr_d", "Adam learning rates of G and D"),
    ("data.train_proposals / data.val_proposals", "proposal files (COCO JSON or WIDER tree)"),
    ("logger.kind", "csv, wandb, tensorboard or none"),
    ("resume", "auto or a checkpoint path"),
    ("ckpt", "checkpoint for validate / evaluate / propose"),
    ("evaluate.split / evaluate.score_fusion", "split to evaluate; d_only or geometric_mean"),
]


def _experiment_files() -> list[tuple[str, str]]:
    """``(preset name, first comment line)`` of each preset shipped in ``config/presets/``."""
    out = []
    for p in sorted(PRESETS.glob("*.yaml")):
        first = next((ln for ln in p.read_text().splitlines() if ln.startswith("#")), "# ")
        # The first sentence of the file's header comment, without its parenthesis.
        desc = first.lstrip("# ").strip().split(". ")[0].split(" (")[0].rstrip(":.")
        if len(desc) > 56:
            desc = desc[:53].rsplit(" ", 1)[0] + " ..."
        out.append((p.stem, desc))
    return out


def _groups() -> list[tuple[str, str]]:
    """Top-level config groups with the first line of their dataclass docstring."""
    from gan_detect import config as c

    docs = {
        "variant": "the GAN variant (variant.name: tiny_face, sod_mtgan or bicubic) and its networks",
        "data": "the DataModule (data.name: wider_face or coco), ROI mining and loaders",
        "detector": "the baseline proposal detector (task=detector)",
    }
    cls = {
        "optim": c.OptimConfig,
        "trainer": c.TrainerConfig,
        "logger": c.LoggerConfig,
        "evaluate": c.EvalConfig,
    }
    rows = []
    for f in dataclasses.fields(ExperimentConfig):
        if f.name in docs:
            rows.append((f.name, docs[f.name]))
        elif f.name in cls:
            rows.append((f.name, (cls[f.name].__doc__ or "").strip().splitlines()[0]))
    return rows


def config_epilog() -> str:
    """The shared part of the config-driven commands' help: files, groups, keys, how to list."""
    lines = [
        "config files: a YAML path, or a preset shipped with gan-detect by name (stack them left",
        "to right; later files and key=value win). Presets:",
    ]
    lines += [f"  {p:39s} {d}" for p, d in _experiment_files()] or ["  (no presets found)"]
    lines += ["", "config groups (set any key as group.key=value):"]
    lines += [f"  {g:10s} {d}" for g, d in _groups()]
    lines += ["", "common keys:"]
    lines += [f"  {k:42s} {d}" for k, d in COMMON_KEYS]
    lines += [
        "",
        "every key with its type and default:  gan-detect config show CONFIG.yaml... --keys",
        "the resolved config (YAML):           gan-detect config show CONFIG.yaml... [key=value]",
    ]
    return "\n".join(lines)


def _parser(prog: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=f"gan-detect {prog}",
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _config_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = _parser(prog, description, config_epilog())
    p.add_argument(
        "args",
        nargs="*",
        metavar="CONFIG.yaml | key=value",
        help="YAML files merged left to right, then key=value overrides",
    )
    return p


FIT_HELP = """\
Train a GAN variant on ROIs mined from proposals (task=gan, the default), or the baseline
proposal detector (task=detector: the detector_wider / detector_coco presets).

inputs:  config files + key=value overrides; the dataset under data.root; proposal files.
outputs: OUTPUT_DIR/config.yaml (the resolved config), checkpoints/last.ckpt (+ best),
         logs/ (CSV or W&B), val_images/ (LR | bicubic | SR | HR grids).
example: gan-detect fit tiny_face_wider data.root=/data/widerface"""

VALIDATE_HELP = """\
Run the validation loop of a trained checkpoint and print its metrics (AP, D accuracy, losses).

inputs:  the run's config files + ckpt=PATH (a checkpoint written by fit).
outputs: printed metric table (nothing written)."""

EVALUATE_HELP = """\
Baseline vs GAN re-scoring on evaluate.split: the detector's own scores against D's re-scored
(and, for SOD-MTGAN, re-localised) proposals, with the official WIDER FACE protocol / COCO AP.

inputs:  the run's config files + ckpt=PATH (a GAN checkpoint; default
         OUTPUT_DIR/checkpoints/last.ckpt when it exists, else the baseline alone).
outputs: OUTPUT_DIR/eval/metrics.json, per-method predictions, PR curves; `gan-detect compare`
         turns run folders into a report."""

PROPOSE_HELP = """\
Write a detector's proposals for one split, in the official layouts (WIDER txt tree, COCO results
JSON): the input of the GAN stage (data.train_proposals / data.val_proposals). The detector is a
trained one (ckpt=DET.ckpt), the built-in pretrained RetinaFace (detector.arch=retinaface) or
the pretrained COCO FastestDet (detector.arch=fastestdet detector.weights=FastestDet.onnx or its
folder, LICENSE.md beside it).

inputs:  a detector config (detector_wider / detector_coco) + ckpt=DET.ckpt [+ evaluate.split=train]
         or detector.arch=retinaface|fastestdet; or, with no config, --images=DIR (any folder of
         images: a WIDER tree, or flat) [--out=DIR] [ckpt=DET.ckpt | detector.arch=fastestdet
         detector.weights=PATH [detector.tile_sizes=[176]] (sliced inference)].
outputs: OUTPUT_DIR/proposals/SPLIT/ (or --out=DIR; paths printed)."""

DEMO_HELP = """\
The whole chain on generated data, with the same code and configs as a real run: generated faces
(WIDER layout) and shapes (COCO layout) -> baseline detector -> proposals -> ROI stores ->
tiny-face GAN and SOD-MTGAN -> baseline vs GAN re-scoring -> report.

outputs: OUT/report/report.md, OUT/{faces,objects}/ (runs with pipeline.pt for predict),
         OUT/data/ (the generated datasets), OUT/timings.json."""

COMPARE_HELP = """\
Side-by-side report of finished runs (each evaluated with `gan-detect evaluate`): metric table,
AP by object size, PR curves, SR samples and training curves.

inputs:  run folders holding eval/metrics.json.
outputs: OUT/report.md and its figures."""

PREDICT_HELP = """\
Boxes for your images: the detector's proposals re-scored by the GAN of a pipeline file
(OUT/{faces,objects}/pipeline.pt after `gan-detect demo`, or gan_detect.infer.pipeline.export_pipeline);
without --ckpt the built-in pretrained RetinaFace finds faces (re-scored by --gan GAN.ckpt).

inputs:  image files, folders (searched recursively) or globs.
outputs: OUT/<relative path>.json per image (boxes xyxy in pixels, scores, label names),
         OUT/summary.json (processed and failed images), with --draw OUT/<relative path>_boxes.png.
         Unreadable, corrupt or oversized images are reported and skipped.
exit:    0 when at least one image was predicted; 1 when a folder or glob held no image, or
         none could be read; 2 when a path does not exist or an option is wrong.
warning: a GAN trained on generated data (the demo's) re-scoring the built-in RetinaFace on
         real photos is flagged: it can drop real faces (try --fusion geometric_mean)."""

WIDER_EVAL_HELP = """\
Official WIDER FACE easy / medium / hard AP (the eval_tools protocol) of a prediction txt tree
<event>/<name>.txt against the ground-truth .mat files. With --compare PRED_B: both methods, B - A
and its 95 % paired-bootstrap interval over images (--bootstrap resamples, fixed seed)."""

COCO_EVAL_HELP = """\
COCO AP (AP, AP50, AP75, AP_S/M/L and AP_tiny, area < 16 px squared) of a COCO results JSON
against an instances JSON (pycocotools). With --compare RESULTS_B.json: both methods, B - A and
its 95 % paired-bootstrap interval over images (--bootstrap resamples, fixed seed)."""

CONFIG_HELP = """\
Print the resolved config (YAML) of config files + key=value overrides, as fit would use it, or
with --keys every key with its type, default and value. Without files, the defaults of
variant.name=tiny_face / data.name=wider_face (override them to see another variant's keys)."""


def predict_parser() -> argparse.ArgumentParser:
    """Arguments of ``gan-detect predict`` (here so that ``--help`` needs no torch)."""
    ap = _parser("predict", PREDICT_HELP)
    ap.add_argument("inputs", nargs="+", help="image files, folders or globs")
    ap.add_argument(
        "--ckpt",
        default=None,
        metavar="PIPELINE",
        help="pipeline.pt, or a run folder holding one; omitted: the built-in pretrained "
        "RetinaFace face detector (no training needed)",
    )
    ap.add_argument(
        "--gan",
        default=None,
        metavar="GAN.ckpt",
        help="with no --ckpt: a trained GAN checkpoint that re-scores the built-in RetinaFace",
    )
    ap.add_argument(
        "--out", default="predictions", metavar="DIR", help="output folder (default predictions/)"
    )
    ap.add_argument(
        "--draw", action="store_true", help="also write each image with its boxes drawn"
    )
    ap.add_argument("--device", default="cpu", metavar="DEV", help="cpu, cuda, cuda:1 ...")
    ap.add_argument(
        "--score-threshold",
        type=float,
        default=0.3,
        metavar="S",
        help="drop boxes scoring less (default 0.3)",
    )
    ap.add_argument(
        "--max-detections", type=int, default=750, metavar="N", help="per image (default 750)"
    )
    ap.add_argument(
        "--batch-size", type=int, default=4, metavar="N", help="images per forward (default 4)"
    )
    ap.add_argument(
        "--no-refine", action="store_true", help="the detector alone (no GAN re-scoring)"
    )
    ap.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier predict run in --out (refused without it)",
    )
    ap.add_argument(
        "--fusion",
        default=None,
        metavar="NAME",
        help="how D's score and the detector's combine: d_only (D alone), geometric_mean, "
        "learned, size_gated (the last two need the run's score_fusion.json; default: the GAN "
        "run's evaluate.score_fusion)",
    )
    return ap


def wider_eval_parser() -> argparse.ArgumentParser:
    """Arguments of ``gan-detect wider-eval`` (here so that ``--help`` needs no torch)."""
    p = _parser("wider-eval", WIDER_EVAL_HELP)
    p.add_argument("pred_dir", type=Path, help="prediction tree: <event>/<name>.txt")
    p.add_argument("--gt", type=Path, required=True, help="folder with the wider_*_val.mat files")
    p.add_argument(
        "--images",
        type=Path,
        default=None,
        help="optional text file, one 'event/name' per line: evaluate only these",
    )
    _compare_args(p, "PRED_B", "a second prediction tree: B - A with its interval")
    return p


def _compare_args(p: argparse.ArgumentParser, metavar: str, what: str) -> None:
    """``--compare``, ``--bootstrap``, ``--json`` of the two evaluation commands."""
    p.add_argument("--compare", type=Path, default=None, metavar=metavar, help=what)
    p.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        metavar="N",
        help="paired bootstrap resamples of the images for the interval (0: none; default 1000)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    p.add_argument("--json", type=Path, default=None, help="also write the result dict here")


def coco_eval_parser() -> argparse.ArgumentParser:
    """Arguments of ``gan-detect coco-eval`` (here so that ``--help`` needs no torch)."""
    p = _parser("coco-eval", COCO_EVAL_HELP)
    p.add_argument(
        "results", type=Path, help="COCO results JSON: [{image_id, category_id, bbox, score}]"
    )
    p.add_argument("--gt", type=Path, required=True, help="COCO instances JSON (the ground truth)")
    _compare_args(p, "RESULTS_B", "a second results JSON: B - A with its interval")
    return p


def demo_parser() -> argparse.ArgumentParser:
    """Arguments of ``gan-detect demo``."""
    ap = _parser("demo", DEMO_HELP)
    ap.add_argument(
        "--out", default="runs/demo", metavar="DIR", help="output folder (default runs/demo)"
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes (about a minute; for tests): the APs are near 0 at this size",
    )
    ap.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="seed of the generated data and of every training run (default 0); another seed "
        "gives other images and another initialisation, the same seed the same images",
    )
    ap.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="run the demo once per seed (into OUT/seed<N>) and print the seed-averaged "
        "GAN - baseline with its interval over seeds and images",
    )
    return ap


def compare_parser() -> argparse.ArgumentParser:
    """Arguments of ``gan-detect compare``."""
    ap = _parser("compare", COMPARE_HELP)
    ap.add_argument("runs", nargs="+", metavar="RUN_DIR", help="evaluated run folders")
    ap.add_argument(
        "--out",
        default="reports/compare",
        metavar="DIR",
        help="report folder (default reports/compare)",
    )
    return ap


def config_parser() -> argparse.ArgumentParser:
    """Arguments of ``gan-detect config show``."""
    ap = _parser("config", CONFIG_HELP, config_epilog())
    ap.add_argument("action", choices=["show"], help="show: print the resolved config")
    ap.add_argument("args", nargs="*", metavar="CONFIG.yaml | key=value")
    ap.add_argument(
        "--keys", action="store_true", help="list every key with its type, default and value"
    )
    return ap


# --- commands ---


def _config_args(
    parser: argparse.ArgumentParser, args: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Files and overrides of a config-driven command; ``-h`` prints help and exits 0.

    Not ``parser.parse_args``: sweep agents may pass ``--key=value``, which argparse would reject.
    """
    if any(a in ("-h", "--help") for a in args):
        parser.print_help()
        raise SystemExit(0)
    return _split_args(args)


def cmd_fit(args: Sequence[str]) -> int:
    files, overrides = _config_args(_config_parser("fit", FIT_HELP), args)
    cfg = load_config(files, overrides)
    from gan_detect.app.preflight import check_before_fit

    if cfg.task == "detector" and cfg.detector.arch in ("retinaface", "fastestdet"):
        raise ConfigError(
            f"config key 'detector.arch': {cfg.detector.arch} is a built-in pretrained detector; "
            f"it is not trained (use it directly: gan-detect propose ... "
            f"detector.arch={cfg.detector.arch})"
        )
    check_before_fit(cfg)  # before torch loads: data folder, then pretrained weights
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from gan_detect.train.fit import FitInterrupted

    try:
        if cfg.task == "detector":
            from gan_detect.train.detector import fit_detector

            print(f"detector checkpoint: {fit_detector(cfg, ckpt_path=_resolve_resume(cfg))}")
            return 0
        from gan_detect.train.fit import fit

        fit(cfg, ckpt_path=_resolve_resume(cfg))
    except SIGTERMException as err:
        # train.fit re-raises it with code 143 (Lightning's own is exit 0); last.ckpt is saved.
        last = Path(cfg.output_dir) / "checkpoints" / "last.ckpt"
        print(
            f"gan-detect fit: stopped by SIGTERM before the end of training; {last} holds the "
            "state to continue from with resume=auto",
            file=sys.stderr,
        )
        return int(err.code or 143)
    except FitInterrupted as err:
        kept = (
            f"{err.saved} holds the state to continue from with resume=auto"
            if err.saved
            else "no checkpoint was saved at the interrupt (resume=auto takes the newest one)"
        )
        print(f"gan-detect fit: interrupted (Ctrl-C); {kept}", file=sys.stderr)
        return int(err.code or 130)
    return 0


def cmd_validate(args: Sequence[str]) -> int:
    files, overrides = _config_args(_config_parser("validate", VALIDATE_HELP), args)
    cfg = load_config(files, overrides)
    if cfg.ckpt is None:
        raise ConfigError("validate needs ckpt=PATH (a checkpoint written by fit)")
    from gan_detect.train.fit import validate

    metrics = validate(cfg, cfg.ckpt)
    for k, v in sorted(metrics.items()):
        print(f"{k:28s} {v:.4f}")
    return 0


def cmd_evaluate(args: Sequence[str]) -> int:
    files, overrides = _config_args(_config_parser("evaluate", EVALUATE_HELP), args)
    cfg = load_config(files, overrides)
    from gan_detect.app.evaluate import evaluate

    ckpt = cfg.ckpt
    default = Path(cfg.output_dir) / "checkpoints" / "last.ckpt"
    if ckpt is None and default.is_file():
        ckpt = str(default)  # the run's own newest state, as the help says
    if ckpt is None:
        print(
            f"gan-detect evaluate: no ckpt= and no {default}: the baseline alone", file=sys.stderr
        )
    evaluate(cfg, ckpt)
    return 0


def propose_parser() -> argparse.ArgumentParser:
    """``gan-detect propose``'s help: config files and overrides, or ``--images``/``--out``."""
    p = _config_parser("propose", PROPOSE_HELP)
    p.add_argument(
        "--images",
        metavar="DIR",
        help="any folder of images (a WIDER tree, or flat): no config needed; the built-in "
        "RetinaFace, or ckpt=DET.ckpt",
    )
    p.add_argument(
        "--out", metavar="DIR", help="output folder (default: proposals/ with --images, else "
        "OUTPUT_DIR/proposals/SPLIT/)"
    )  # fmt: skip
    return p


def _take_option(args: list[str], name: str) -> tuple[str | None, list[str]]:
    """``--name=V`` or ``--name V`` out of ``args``: (V or None, the other args)."""
    for i, a in enumerate(args):
        if a.startswith(f"{name}="):
            return a.split("=", 1)[1], args[:i] + args[i + 1 :]
        if a == name and i + 1 < len(args):
            return args[i + 1], args[:i] + args[i + 2 :]
    return None, args


def cmd_propose(args: Sequence[str]) -> int:
    if any(a in ("-h", "--help") for a in args):
        propose_parser().print_help()
        return 0
    from gan_detect.detector.propose import ProposalsInterrupted

    try:
        return _propose(args)
    except ProposalsInterrupted as stop:  # Ctrl-C: the finished images' proposals are written
        where = ", ".join(str(p) for p in stop.written.values()) or "nothing written"
        print(
            f"gan-detect propose: interrupted (Ctrl-C) after {len(stop.proposals)} of "
            f"{stop.total} images; their proposals are kept ({where}); a partial file is "
            "refused by fit unless data.missing_proposals=jitter|none",
            file=sys.stderr,
        )
        return 130


def _propose(args: Sequence[str]) -> int:
    from gan_detect.app.propose import propose

    images, rest = _take_option(list(args), "--images")
    out, args = _take_option(rest, "--out")
    if images is not None:
        # Any folder of images, no config: the built-in RetinaFace (or ckpt=DET.ckpt, or
        # detector.arch=fastestdet detector.weights=PATH [detector.tile_sizes=[176]]).
        from torch import nn

        from gan_detect.detector.builtin import builtin_detector
        from gan_detect.detector.module import DetectorModule
        from gan_detect.detector.propose import propose_folder

        keys = ("ckpt", "detector.arch", "detector.weights", "detector.tile_sizes")
        kv = dict(a.split("=", 1) for a in args if "=" in a and a.split("=", 1)[0] in keys)
        bad = [a for a in args if "=" not in a or a.split("=", 1)[0] not in keys]
        if bad:
            raise ConfigError(
                "propose --images=DIR takes only --out=DIR, ckpt=PATH, detector.arch=NAME, "
                f"detector.weights=PATH and detector.tile_sizes=[N,...], got {bad}"
            )
        ckpt = kv.get("ckpt")
        if ckpt is not None and len(kv) > 1:
            raise ConfigError("propose --images=DIR: give ckpt=PATH or detector.arch=..., not both")
        arch = kv.get("detector.arch", "retinaface")
        model: nn.Module | None = DetectorModule.from_checkpoint(ckpt) if ckpt is not None else None
        tiles_text = kv.get("detector.tile_sizes", "").strip("[] ")
        try:
            tiles = [int(t) for t in tiles_text.split(",") if t.strip()]
        except ValueError:
            raise ConfigError(
                f"detector.tile_sizes: expected a list of integers like [176], got {tiles_text!r}"
            ) from None
        if ckpt is None and (arch != "retinaface" or len(kv) > 1):
            model = builtin_detector(arch, kv.get("detector.weights"), tile_sizes=tiles)
        written = propose_folder(images, out or "proposals", model)
        for fmt, path in written.items():
            print(f"{fmt}: {path}")
        return 0
    files, overrides = _split_args(args)
    cfg = load_config(files, overrides)
    if cfg.ckpt is None and cfg.detector.arch not in ("retinaface", "fastestdet"):
        raise ConfigError(
            "propose needs ckpt=PATH (a detector checkpoint), detector.arch=retinaface "
            "(the built-in pretrained face detector) or detector.arch=fastestdet "
            "detector.weights=PATH (the pretrained COCO one)"
        )
    for fmt, path in propose(cfg, cfg.ckpt, cfg.evaluate.split, out_dir=out).items():
        print(f"{fmt}: {path}")
    return 0


def cmd_compare(args: Sequence[str]) -> int:
    ns = compare_parser().parse_args(list(args))
    from gan_detect.app.report import write_report

    print(f"report: {write_report(ns.runs, ns.out)}")
    return 0


def cmd_demo(args: Sequence[str]) -> int:
    ns = demo_parser().parse_args(list(args))
    from gan_detect.app.demo import run_demo, run_demo_seeds

    if ns.seeds:
        run_demo_seeds(ns.out, ns.seeds, quick=ns.quick)
    else:
        run_demo(ns.out, quick=ns.quick, seed=ns.seed)
    return 0


def cmd_predict(args: Sequence[str]) -> int:
    parser = predict_parser()
    ns = parser.parse_args(list(args))
    for name in ("batch_size", "max_detections"):
        if getattr(ns, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(ns, name)}")
    if ns.ckpt is not None and ns.gan is not None:
        parser.error("--gan goes with the built-in detector: give --ckpt or --gan, not both")
    from gan_detect.app.predict import run_cli

    return int(run_cli(ns))


def cmd_wider_eval(args: Sequence[str]) -> int:
    ns = wider_eval_parser().parse_args(list(args))
    from gan_detect.app.wider_eval import run_cli

    return int(run_cli(ns))


def cmd_coco_eval(args: Sequence[str]) -> int:
    ns = coco_eval_parser().parse_args(list(args))
    from gan_detect.app.wider_eval import run_coco_cli

    return int(run_coco_cli(ns))


def cmd_config(args: Sequence[str]) -> int:
    ns = config_parser().parse_intermixed_args(list(args))
    from gan_detect.config.show import format_keys, resolved_yaml

    files, overrides = _split_args(ns.args)
    print(format_keys(files, overrides) if ns.keys else resolved_yaml(files, overrides), end="")
    return 0


COMMANDS: dict[str, tuple[Callable[[Sequence[str]], int], str]] = {
    "demo": (cmd_demo, "the whole chain on generated data: demo [--out DIR] [--quick] [--seed N]"),
    "fit": (cmd_fit, "train a GAN variant or the detector: fit CONFIG.yaml... [key=value ...]"),
    "validate": (cmd_validate, "validate a checkpoint: validate CONFIG.yaml... ckpt=PATH"),
    "evaluate": (cmd_evaluate, "baseline vs GAN re-scoring: evaluate CONFIG.yaml... ckpt=PATH"),
    "propose": (
        cmd_propose,
        "write a detector's proposals: propose CONFIG.yaml... ckpt=DET.ckpt "
        "| detector.arch=retinaface|fastestdet; or propose --images=DIR [--out=DIR] "
        "[ckpt=DET.ckpt | detector.arch=fastestdet detector.weights=PATH]",
    ),
    "compare": (cmd_compare, "side-by-side report: compare RUN_DIR... [--out DIR]"),
    "predict": (
        cmd_predict,
        "boxes for your images: predict [--ckpt PIPELINE | --gan GAN.ckpt] IMAGES... [--draw]",
    ),
    "wider-eval": (
        cmd_wider_eval,
        "official WIDER FACE AP of a prediction tree: wider-eval PRED --gt GT [--compare PRED_B]",
    ),
    "coco-eval": (
        cmd_coco_eval,
        "COCO AP of a results JSON: coco-eval RESULTS.json --gt INSTANCES.json [--compare B.json]",
    ),
    "config": (cmd_config, "print the resolved config: config show CONFIG.yaml... [--keys]"),
}


def _usage() -> str:
    lines = [
        "usage: gan-detect [--verbose] [--threads N] COMMAND [args]   (COMMAND --help for details)",
        "",
        "commands:",
    ]
    lines += [f"  {name:12s} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += [
        "",
        "--verbose (or GAN_DETECT_VERBOSE=1): also Lightning's tips, hardware lines, summaries.",
        "--debug (or GAN_DETECT_DEBUG=1): a traceback instead of the one-line error.",
        "--threads N: CPU threads for torch (default $GAN_DETECT_THREADS, else torch's own);",
        "  idle OpenMP threads spin briefly, then sleep (GOMP_SPINCOUNT=3000 unless it or",
        "  OMP_WAIT_POLICY is set; OMP_WAIT_POLICY=PASSIVE for a heavily shared node)",
        "start with `gan-detect demo` (a few minutes on a CPU); README.md has the rest.",
    ]
    return "\n".join(lines)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors in what the user gave: one line, exit 2.

    The project's :class:`InputError` (config, checkpoint, run folder and data errors derive
    from it), every ``OSError`` (a missing, unreadable or unwritable path; a full disk) and
    Lightning's config errors. Not a bare ``ValueError``: an internal bug keeps its traceback.
    """
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from gan_detect.utils.errors import InputError

    return (InputError, OSError, MisconfigurationException)


def _one_line(err: BaseException) -> str:
    """The error as one line; an ``OSError`` names its path (``strerror: filename``)."""
    if isinstance(err, OSError) and err.filename is not None:
        text = str(err.strerror or err)
        name = str(err.filename)
        if name not in text:
            text = f"{name}: {text}"
        return " ".join(text.split())
    return " ".join(str(err).split()) or type(err).__name__


def torch_mismatch_message(err: BaseException) -> str | None:
    """One line for torch and torchvision builds that do not belong together, else None.

    A torchvision built for another torch (a CUDA wheel next to a CPU-only torch, or other
    versions) fails at import with ``operator torchvision::nms does not exist``.
    """
    if not isinstance(err, RuntimeError) or "torchvision::" not in str(err):
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        pair = f"torch {version('torch')} and torchvision {version('torchvision')}"
    except PackageNotFoundError:
        pair = "torch and torchvision"
    return (
        f"{pair} do not match (torchvision was built for another torch: {err}); install both "
        "from one index, e.g. pip install --force-reinstall torch torchvision --index-url "
        "https://download.pytorch.org/whl/cpu (CPU) or without --index-url (CUDA)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gan-detect`` console script.

    Errors in the user's input print one line ``gan-detect CMD: error: ...`` and exit 2; the
    traceback is shown with ``--debug`` (anywhere on the command line) or ``GAN_DETECT_DEBUG=1``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("GAN_DETECT_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if "--verbose" in argv:  # anywhere: config commands take every other word as a file
        argv.remove("--verbose")
        os.environ[VERBOSE_ENV] = "1"  # inherited by DDP ranks and subprocesses
    quiet_lightning()
    threads: int | None = None
    if argv and (argv[0] == "--threads" or argv[0].startswith("--threads=")):
        # Global option before the command: gan-detect --threads N COMMAND ...
        value = argv[0].split("=", 1)[1] if "=" in argv[0] else (argv[1] if len(argv) > 1 else "")
        argv = argv[1:] if "=" in argv[0] else argv[2:]
        try:
            threads = int(value)
        except ValueError:
            print(f"gan-detect: --threads expects an integer, got {value!r}", file=sys.stderr)
            return 2
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"gan-detect: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    from gan_detect.utils.threads import configure_threads

    try:
        # Before any command imports torch: the OpenMP wait policy is read when torch loads.
        configure_threads(threads)
    except ValueError as err:
        print(f"gan-detect: error: {err}", file=sys.stderr)
        return 2
    try:
        return int(COMMANDS[name][0](rest) or 0)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except Exception as err:
        mismatch = None if debug else torch_mismatch_message(err)
        if mismatch is not None:
            print(f"gan-detect {name}: error: {mismatch}", file=sys.stderr)
            return 2
        # The cheap classes first: _user_errors() imports Lightning, which a light command
        # (predict on a missing path) has not loaded and should not wait for.
        light = isinstance(err, (ConfigError, FileNotFoundError))
        if debug or not (light or isinstance(err, _user_errors())):
            raise
        print(f"gan-detect {name}: error: {_one_line(err)}", file=sys.stderr)
        return 2


__all__ = ["load_config", "load_raw_config", "main", "to_container"]

if __name__ == "__main__":
    raise SystemExit(main())
