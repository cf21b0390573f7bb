"""Thread defaults applied at process start (gan_detect/threads.py) and the CLI's --threads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _synth import fake_command

from gan_detect.app import cli
from gan_detect.utils.threads import (
    DEFAULT_SPINCOUNT,
    ENV_VAR,
    available_cores,
    configure_threads,
    resolve_threads,
)

ROOT = Path(__file__).resolve().parents[2]


def test_resolve_threads_precedence_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert resolve_threads() == available_cores() >= 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert resolve_threads() == 3
    monkeypatch.setenv(ENV_VAR, "2")
    assert resolve_threads() == 2  # our variable wins over OpenMP's
    assert resolve_threads(5) == 5  # the explicit option wins over both
    monkeypatch.setenv(ENV_VAR, "two")
    with pytest.raises(ValueError, match=f"{ENV_VAR}.*'two'"):
        resolve_threads()
    with pytest.raises(ValueError, match="--threads.*'0'"):
        resolve_threads(0)


def test_configure_before_torch_import_sets_threads_and_bounded_spin() -> None:
    """In a fresh process (torch not loaded yet) the defaults reach torch and libgomp."""
    code = (
        "import json, os, sys\n"
        "from gan_detect.utils.threads import ENV_VAR, configure_threads\n"
        "configure_threads()\n"
        "unset = 'OMP_NUM_THREADS' not in os.environ  # no explicit count: left to torch\n"
        "os.environ[ENV_VAR] = '1'\n"
        "n = configure_threads()\n"
        "loaded = 'torch' in sys.modules\n"
        "import torch\n"
        "print(json.dumps([unset, n, loaded, torch.get_num_threads(),"
        " os.environ['GOMP_SPINCOUNT'], 'OMP_WAIT_POLICY' in os.environ]))\n"
    )
    drop = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", ENV_VAR)
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [True, 1, False, 1, "3000", False]


def test_cli_threads_option_applies_before_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def fake(args: list[str]) -> int:
        seen.update(args=list(args), threads=torch.get_num_threads())
        seen["omp"] = os.environ["OMP_NUM_THREADS"]
        return 0

    before = torch.get_num_threads()
    monkeypatch.setitem(cli.COMMANDS, "wider-eval", fake_command("wider-eval", fake))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY"):
        monkeypatch.setenv(var, os.environ.get(var, "x"))  # restored after the test
    target = 2 if before == 1 else 1  # a value that differs from the current one
    try:
        assert cli.main(["--threads", str(target), "wider-eval", "a"]) == 0
        assert seen == {"args": ["a"], "threads": target, "omp": str(target)}
    finally:
        torch.set_num_threads(before)


def test_cli_threads_option_rejects_bad_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--threads", "many", "wider-eval"]) == 2
    assert "--threads expects an integer, got 'many'" in capsys.readouterr().err
    assert cli.main(["--threads=0", "wider-eval"]) == 2
    assert "--threads" in capsys.readouterr().err


def test_user_spin_count_or_wait_policy_is_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS"):  # undone after the test
        monkeypatch.setenv(var, "x")
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("GOMP_SPINCOUNT", "300000")  # libgomp's own spin-then-sleep default
    configure_threads()
    assert "OMP_WAIT_POLICY" not in os.environ and os.environ["GOMP_SPINCOUNT"] == "300000"
    monkeypatch.delenv("GOMP_SPINCOUNT")
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # a heavily shared node
    configure_threads()
    assert "GOMP_SPINCOUNT" not in os.environ and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    configure_threads()
    assert os.environ["GOMP_SPINCOUNT"] == DEFAULT_SPINCOUNT == "3000"
    assert "OMP_WAIT_POLICY" not in os.environ
