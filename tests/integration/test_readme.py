"""Every README code block marked ``<!-- readme-test -->`` runs as written, after a quick demo.

Mark a block by putting ``<!-- readme-test -->`` on the line before its opening fence. Python
blocks run as a script; bash blocks run line by line (``\\`` continuations joined, comments
dropped) with ``gan-detect`` meaning this interpreter's ``python -m gan_detect``. Both run in a
scratch folder where ``runs/demo`` is the session's quick demo and ``my_photos/`` holds two of its
images (``experiments/`` is the checkout's): the README's paths are the ones a new user has
after ``gan-detect demo``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
MARK = "<!-- readme-test -->"
_BLOCK = re.compile(r"^" + re.escape(MARK) + r"\n```(\w+)\n(.*?)^```", re.M | re.S)


def readme_blocks() -> list[tuple[str, str]]:
    """``(language, code)`` of each marked block, in README order."""
    return [(m.group(1), m.group(2)) for m in _BLOCK.finditer(README.read_text())]


def shell_commands(code: str) -> list[str]:
    """Lines of a bash block, continuations joined, comments and blank lines dropped."""
    joined = code.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if line:
            out.append(line)
    return out


def test_readme_marks_the_api_snippet_and_the_cheap_commands() -> None:
    blocks = readme_blocks()
    langs = [lang for lang, _ in blocks]
    assert "python" in langs and "bash" in langs
    text = "\n".join(code for _, code in blocks)
    for must in ("Pipeline.load", "gan-detect predict", "gan-detect config show", "--help"):
        assert must in text, must


@pytest.fixture
def workdir(demo: Path, tmp_path: Path) -> Path:
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "demo").symlink_to(demo)
    (tmp_path / "experiments").symlink_to(README.parent / "experiments")
    photos = tmp_path / "my_photos"
    photos.mkdir()
    for p in sorted((demo / "data" / "faces" / "WIDER_val").rglob("*.jpg"))[:2]:
        shutil.copy(p, photos / p.name)
    assert len(list(photos.iterdir())) == 2
    return tmp_path


def _env() -> dict[str, str]:
    root = str(README.parent)
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": f"{root}:{path}".rstrip(":")}


@pytest.mark.slow  # 20-40 s a block on the loaded 2-core machine: each loads torch and a pipeline
@pytest.mark.parametrize("index", range(len(readme_blocks())))
def test_readme_block_runs(index: int, workdir: Path) -> None:
    lang, code = readme_blocks()[index]
    if lang == "python":
        cmds = [[sys.executable, "-W", "error::UserWarning", "-c", code]]
    elif lang == "bash":
        cmds = []
        for line in shell_commands(code):
            argv = shlex.split(line)
            assert argv[0] == "gan-detect", f"README block {index}: only gan-detect lines: {line}"
            cmds.append([sys.executable, "-m", "gan_detect", *argv[1:]])
    else:
        pytest.fail(f"README block {index}: unsupported language {lang!r}")
    for cmd in cmds:
        res = subprocess.run(
            cmd, cwd=workdir, env=_env(), capture_output=True, text=True, timeout=300
        )
        assert res.returncode == 0, f"README block {index}: {cmd[1:]}\n{res.stderr[-3000:]}"
        assert "Traceback" not in res.stderr, res.stderr[-3000:]


_REF = re.compile(
    r"docs/design\.md(?:\S*)?(?:,| ) ?(?:decisions? )?((?:§\d+|D\d+)(?:(?:, | and |-)(?:§\d+|D\d+))*)"
)


def test_design_references_resolve_and_no_stale_ones_remain() -> None:
    root = README.parent
    design = (root / "docs" / "design.md").read_text()
    sections = set(re.findall(r"^## (\d+)\.", design, re.M))
    decisions = set(re.findall(r"^- \*\*D(\d+)\.", design, re.M))
    assert len(sections) >= 6 and len(decisions) >= 12
    files = [root / "README.md", *root.glob("experiments/*.yaml"), *root.glob("benchmarks/*")]
    files += [*root.glob("gan_detect/**/*.py")]
    checked = 0
    for f in files:
        if not f.is_file():
            continue
        text = f.read_text()
        for stale in ("ARCHITECTURE", "LESSONS"):
            assert stale not in text, f"{f}: cites {stale}, which is not in the repository"
        for m in _REF.finditer(text):
            for ref in re.findall(r"§(\d+)|D(\d+)", m.group(1)):
                sec, dec = ref
                assert (sec in sections) if sec else (dec in decisions), (f, m.group(0))
                checked += 1
    assert checked >= 10


def test_documented_report_tables_have_the_shape_report_md_prints() -> None:
    """The demo's report tables shown in docs/results.md (the README links them) have the
    columns and rows ``report.md`` prints."""
    from gan_detect.app.report import COCO_KEYS, WIDER_KEYS, metric_table

    def run(keys: tuple[str, ...]) -> dict:
        m = {k: 0.5 for k in keys}
        return {"name": "r", "eval": {"metrics": {"baseline": m, "gan": m}}}

    printed = metric_table([run(WIDER_KEYS + COCO_KEYS)])
    headers = [ln for ln in printed.splitlines() if ln.startswith("| run |")]
    titles = [ln for ln in printed.splitlines() if ln.startswith("**")]
    text = (README.parent / "docs" / "results.md").read_text()
    for line in headers + titles:
        assert line in text, f"docs/results.md lacks the report's line {line!r}"
    methods = {ln.split("|")[2].strip() for ln in printed.splitlines() if ln.startswith("| r |")}
    assert methods == {"baseline", "gan", "GAN - baseline"}
    for m in methods:
        assert f"[faces] | {m} |" in text
