"""Relative links in README.md and docs/*.md lead somewhere: the file exists and, for a link into
a markdown file, the ``#anchor`` is one of its headings (GitHub's slugs)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "docs").glob("*/*.md")])

_FENCE = re.compile(r"^```.*?^```", re.M | re.S)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = _FENCE.sub("", path.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", text, re.M)}


def links(path: Path) -> list[str]:
    """Link targets outside code blocks and code spans."""
    text = _CODE.sub("", _FENCE.sub("", path.read_text()))
    return _LINK.findall(text)


def test_slug_follows_github() -> None:
    assert slug("Choices where the papers are silent (each is a config option)") == (
        "choices-where-the-papers-are-silent-each-is-a-config-option"
    )
    assert slug("Weights & Biases, multi-GPU, SLURM") == "weights--biases-multi-gpu-slurm"


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_relative_links_resolve(doc: Path) -> None:
    bad = []
    for target in links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
            continue
        path_part, _, anchor = target.partition("#")
        dest = (doc.parent / path_part).resolve() if path_part else doc
        if not dest.exists():
            bad.append(f"{target}: no such file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert bad == [], f"{doc.relative_to(ROOT)}: " + "; ".join(bad)


def test_the_scan_sees_links() -> None:
    """A regex that matched nothing would pass every file."""
    found = [t for d in DOCS for t in links(d) if not t.startswith("http")]
    assert len(found) >= 10 and any("#" in t for t in found)
