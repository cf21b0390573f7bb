"""Experiments as configs: a YAML file (rows x seeds x fusions x budget, dataset and detector by
name) and one runner, ``gan-detect experiment run FILE``.

Layer: above ``train`` (it trains rows, evaluates them through ``infer`` and tabulates with
``metrics``), below ``app`` (the command).
"""

from __future__ import annotations

from pathlib import Path


def builtin_experiments() -> dict[str, Path]:
    """Experiment files by name: ``experiments/*.yaml`` of the working directory and of the
    source checkout this package runs from (``real_wider`` -> ``experiments/real_wider.yaml``)."""
    found: dict[str, Path] = {}
    for folder in (Path(__file__).resolve().parents[2] / "experiments", Path("experiments")):
        if folder.is_dir():
            for p in sorted(folder.glob("*.yaml")):
                text = p.read_text(errors="replace")
                if "\nrows:" in text and "\nconfig:" in text:  # not a run config of `fit`
                    found.setdefault(p.stem, p)
    return found


__all__ = ["builtin_experiments"]
