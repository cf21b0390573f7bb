"""What the commands print for people: plurals, progress bars only on a terminal, wall time."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gan_detect.utils.console import plural, process_start_time, show_progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plural_takes_the_number_of_its_count() -> None:
    assert [plural(n, "box") for n in (0, 1, 2)] == ["0 boxes", "1 box", "2 boxes"]
    assert plural(1, "image") == "1 image" and plural(3, "image") == "3 images"
    assert plural(2, "child", "children") == "2 children"


def test_progress_bars_only_on_a_terminal() -> None:
    assert show_progress(True, _Tty()) is True
    assert show_progress(False, _Tty()) is False
    # A redirected stream (a log file, a pipe, pytest's capture) gets no bar redraws.
    assert show_progress(True, io.StringIO()) is False


def test_process_start_time_is_when_the_interpreter_started() -> None:
    code = (
        "import time; t = time.time(); time.sleep(0.5); "
        "from gan_detect.utils.console import process_start_time as p; print(t - p())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # Before the script's first line, and not long before (interpreter start-up; /proc's boot
    # time is whole seconds). The sleep is not counted against it: it comes after t.
    assert 0 <= float(out.stdout) < 5
    assert process_start_time() <= time.time()


def test_lightning_bar_only_when_stdout_is_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning's bar draws on stdout: a fit with stdout in a file logs no redraws."""
    from _synth import tiny_config

    from gan_detect.config.validate import to_experiment_config
    from gan_detect.train.trainer import build_trainer

    raw = tiny_config("tiny_face", **{"trainer.enable_progress_bar": True})
    cfg = to_experiment_config({**raw, "output_dir": str(tmp_path)})
    monkeypatch.setattr(sys, "stdout", _Tty())
    assert build_trainer(cfg).progress_bar_callback is not None
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert build_trainer(cfg).progress_bar_callback is None
