"""Every subcommand's --help is light (no torch import: what made it slow), says what it does,
and `config show`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gan_detect.app.cli import COMMANDS, main
from gan_detect.config import PRESETS

ROOT = Path(__file__).resolve().parents[2]

# Runs every command's --help in one fresh interpreter and reports what got imported.
_PROBE = """
import contextlib, io, json, sys
from gan_detect.app.cli import COMMANDS, main
out = {}
for name in [None, *COMMANDS]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["--help"] if name is None else [name, "--help"])
    out[str(name)] = {"rc": rc, "text": buf.getvalue()}
heavy = [m for m in ("torch", "lightning", "torchvision", "timm") if m in sys.modules]
print(json.dumps({"help": out, "heavy": heavy}))
"""


@pytest.fixture(scope="module")
def helps() -> dict:
    res = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_help_of_every_command_imports_no_torch(helps: dict) -> None:
    # The import check, not a wall-clock bound (a loaded machine breaks those): torch, Lightning,
    # torchvision and timm are what took --help from well under a second to several seconds.
    assert helps["heavy"] == []
    assert set(helps["help"]) == {"None", *COMMANDS}
    for name, h in helps["help"].items():
        assert h["rc"] == 0, name
        if name != "None":
            assert h["text"].startswith(f"usage: gan-detect {name}"), (name, h["text"][:200])


def test_config_commands_list_files_groups_keys_and_how_to_list_every_key(helps: dict) -> None:
    for name in ("fit", "validate", "evaluate", "propose", "config"):
        text = helps["help"][name]["text"]
        assert "\n  tiny_face_wider " in text and "\n  smoke " in text  # the shipped presets
        for group in ("variant", "data", "optim", "trainer", "logger", "evaluate", "detector"):
            assert f"\n  {group} " in text, (name, group)
        assert "data.root" in text and "trainer.max_epochs" in text
        assert "gan-detect config show CONFIG.yaml... --keys" in text
        assert "inputs:" in text or name == "config"


def test_compare_help_is_help_and_demo_help_explains_seed(helps: dict) -> None:
    assert "RUN_DIR" in helps["help"]["compare"]["text"]
    assert "metrics.json not found" not in helps["help"]["compare"]["text"]
    demo = " ".join(helps["help"]["demo"]["text"].split())
    assert "--seed N seed of the generated data and of every training run" in demo
    assert "outputs:" in helps["help"]["predict"]["text"]
    top = " ".join(helps["help"]["None"]["text"].split())
    assert "--seeds N..." in top  # the top-level list names it too


def test_fit_help_names_every_score_fusion(helps: dict) -> None:
    from gan_detect.config.schema import SCORE_FUSIONS

    text = helps["help"]["fit"]["text"]
    line = next(ln for ln in text.splitlines() if "evaluate.score_fusion" in ln)
    assert len(SCORE_FUSIONS) == 4 and all(f in line for f in SCORE_FUSIONS), line


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from gan_detect import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"gan-detect {__version__}"


def test_python_m_gan_detect_help_imports_no_torch() -> None:
    """``python -m gan_detect compare --help`` stays light: what makes it slow is importing torch
    (checked as an import, not as a wall-clock bound, which a loaded machine breaks)."""
    code = (
        "import runpy, sys\n"
        "sys.argv = ['gan-detect', 'compare', '--help']\n"
        "try:\n"
        "    runpy.run_module('gan_detect', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    rc = e.code\n"
        "heavy = [m for m in ('torch', 'lightning', 'torchvision') if m in sys.modules]\n"
        "print('RC', rc, 'HEAVY', heavy)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert "usage: gan-detect compare" in res.stdout, res.stderr
    assert "RC 0 HEAVY []" in res.stdout, res.stdout[-500:]


def test_config_show_prints_the_resolved_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(PRESETS / f) for f in ("tiny_face_wider.yaml", "smoke.yaml")]
    assert main(["config", "show", *files, "data.root=/somewhere", "variant.adv_weight=0.5"]) == 0
    text = capsys.readouterr().out
    assert "root: /somewhere" in text and "adv_weight: 0.5" in text
    assert "g_channels: 16" in text  # smoke.yaml over tiny_face_wider.yaml (64 in the dataclass)


def test_config_show_keys_lists_type_default_and_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--keys", str(PRESETS / "smoke.yaml")]) == 0
    rows = {ln.split()[0]: ln.split() for ln in capsys.readouterr().out.splitlines()[2:]}
    assert rows["variant.g_channels"] == ["variant.g_channels", "int", "64", "=", "16"]
    assert rows["optim.lr_g"][1:3] == ["float", "0.0001"]
    assert rows["trainer.max_epochs"][1] == "int"
    assert "detector.arch" in rows and "evaluate.score_fusion" in rows


def test_config_show_checks_values_as_fit_does(capsys: pytest.CaptureFixture[str]) -> None:
    """It printed ``evaluate.split: tset`` without a word; fit refuses it."""
    from gan_detect.config.show import resolved

    for bad, key in (
        ("evaluate.split=tset", "evaluate.split"),
        ("variant.scale=3", "variant.scale"),
    ):
        assert main(["config", "show", "tiny_face_wider", bad]) == 2
        err = capsys.readouterr().err
        assert f"config key '{key}'" in err and err.startswith("gan-detect config: error:")
        assert main(["fit", "tiny_face_wider", bad]) == 2  # the same check, the same answer
        assert f"config key '{key}'" in capsys.readouterr().err
    # An unset mandatory key is still shown (as ???), not refused.
    # A plugin's section may leave a key mandatory (???): shown as such, not refused.
    from omegaconf import OmegaConf

    from gan_detect.config.show import _check_values

    cfg = resolved([])
    OmegaConf.update(cfg, "data.root", "???")
    _check_values(cfg)
    assert OmegaConf.is_missing(cfg.data, "root")


def test_config_show_names_an_unknown_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "variant.adv_wieght=1"]) == 2
    assert "adv_wieght" in capsys.readouterr().err


def test_wider_eval_prints_three_decimals_and_names_the_official_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.metrics.test_wider_face_ap import EXPECTED, write_fixture

    gt_dir, pred_dir = write_fixture(tmp_path)
    out_json = tmp_path / "r.json"
    assert main(["wider-eval", str(pred_dir), "--gt", str(gt_dir), "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert f"{100 * EXPECTED['ap_hard']:8.3f}" in text  # e.g. 73.827, not 73.83
    assert "settings: official eval_tools gt_list" in text
    saved = json.loads(out_json.read_text())
    assert saved["official_gt_list"] is True and "official" not in saved


def test_evaluate_uses_the_runs_last_checkpoint_when_no_ckpt_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`evaluate` without ckpt= evaluates OUTPUT_DIR/checkpoints/last.ckpt when it exists (as its
    help says), else the baseline alone with a note; an explicit ckpt= always wins."""
    import gan_detect.app.evaluate as training

    seen: list[object] = []
    monkeypatch.setattr(training, "evaluate", lambda cfg, ckpt: seen.append(ckpt))
    exp = PRESETS
    run = tmp_path / "run"
    base = [str(exp / "tiny_face_wider.yaml"), str(exp / "smoke.yaml"), f"output_dir={run}"]
    assert main(["evaluate", *base]) == 0
    assert seen == [None] and "no ckpt= and no" in capsys.readouterr().err
    last = run / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"")
    assert main(["evaluate", *base]) == 0
    assert seen[-1] == str(last)
    other = tmp_path / "other.ckpt"
    assert main(["evaluate", *base, f"ckpt={other}"]) == 0
    assert seen[-1] == str(other)


def test_global_flags_work_before_or_after_the_command_and_sweep_overrides_are_taken(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gan_detect.utils.quiet import VERBOSE_ENV

    # setenv, not delenv: main sets it to "1", and monkeypatch then restores it (absent) after the
    # test, so the session's later subprocesses (the quick demo) stay quiet.
    monkeypatch.setenv(VERBOSE_ENV, "")
    smoke = str(PRESETS / "smoke.yaml")
    # an option between the files and the overrides; a sweep agent's --key=value override
    assert main(["config", "show", smoke, "--verbose", "data.root=/a", "--output_dir=/b"]) == 0
    out = capsys.readouterr().out
    assert "root: /a" in out and "output_dir: /b" in out
    assert os.environ[VERBOSE_ENV] == "1"
    # an unknown option that is no override is refused by the command, in one usage line
    assert main(["config", "show", smoke, "--bogus"]) == 2
    assert "gan-detect config: error: unrecognized arguments: --bogus" in capsys.readouterr().err
    assert main(["compare", "run_a", "--out=x", "--key=1"]) == 2  # not a config command
    assert "unrecognized arguments: --key=1" in capsys.readouterr().err
    # --debug after the command: the traceback instead of the one-line error
    assert main(["config", "show", "variant.adv_wieght=1"]) == 2
    with pytest.raises(Exception, match="adv_wieght"):
        main(["config", "show", "variant.adv_wieght=1", "--debug"])


def test_every_command_is_a_module_with_a_parser_and_a_run() -> None:
    from gan_detect.app.commands import COMMAND_MODULES

    assert len(COMMANDS) == len(COMMAND_MODULES)
    for name, module in COMMANDS.items():
        assert module.NAME == name and callable(module.run) and callable(module.add_parser)
        assert module.__name__.endswith(name.replace("-", "_"))
