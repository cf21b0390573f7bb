"""Markdown tables from the tool's JSONL files: one table per kind (and sub-measurement), one
row per measurement, short cells, the machine named above each table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Fields that are context, not a column (the machine goes above the table).
_SKIP = {
    "bench",
    "benchmark",
    "machine",
    "options",
    "time_utc",
    "ceiling",
    "runs_s",
    "log",
    "lightning_steps_s",
    "plain_steps_s",
    "step_s_quartiles",
    "ratio_quartiles",
    "tree",
    "comparison",
    "objects",
    "tile_sizes",
    "cpu_flags",
    "recall_cls",
    "what",
    "g",
    "image_wh",
    "target",
    "heaviest_conv",
}
# Kinds whose nested results need chosen columns (dotted paths into the record).
COLUMNS: dict[str, list[str]] = {
    "recall": [
        "detector",
        "setting",
        "network_runs_per_image",
        "proposals_per_image",
        "recall.100.small",
        "recall.300.small",
        "recall.1000.tiny",
        "recall.1000.small",
        "recall.1000.all",
        "s_per_image",
    ],
    "detector_ap (coco)": [
        "detector",
        "tile_sizes",
        "row",
        "classes",
        "per_image_cap",
        "images",
        *(f"ap.{k}" for k in ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L", "AP_tiny")),
        "dets_per_image",
        "s_per_image",
        "propose_s_per_image",
    ],
    "detector_ap (wider)": [
        "detector",
        "row",
        "images",
        "ap.easy",
        "ap.medium",
        "ap.hard",
        "official_gt_list",
        "s_per_image",
    ],
    "bootstrap": [
        "protocol",
        "images",
        "n_boot",
        "plain_ap_s",
        "tables_s",
        "bootstrap_s",
        "bootstrap_over_plain",
        "unit_weight_max_abs_diff_points",
    ],
}
MAX_CELL = 32
# Columns that name the row: never shortened.
FULL_CELL = {"row"}


def _cell(v: Any, limit: int | None = MAX_CELL) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return " ".join(_cell(x) for x in v)
    s = str(v)
    return s if limit is None or len(s) <= limit else s[: limit - 1] + "…"


def _get(rec: dict[str, Any], path: str) -> Any:
    cur: Any = rec
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _flat_columns(recs: list[dict[str, Any]]) -> list[str]:
    """Scalar fields in first-seen order; a small dict of scalars becomes ``key.sub`` columns."""
    cols: list[str] = []
    for r in recs:
        for k, v in r.items():
            if k in _SKIP:
                continue
            if isinstance(v, dict):
                if len(v) <= 6 and all(not isinstance(x, dict | list) for x in v.values()):
                    cols += [f"{k}.{s}" for s in v if f"{k}.{s}" not in cols]
            elif isinstance(v, list) and len(v) > 4:
                continue
            elif k not in cols:
                cols.append(k)
    return cols


def machine_line(recs: list[dict[str, Any]]) -> str:
    """The machines of ``recs`` (CPU, cores, GPU, torch) and the load range."""
    names, loads = [], []
    for r in recs:
        m = r.get("machine")
        if not isinstance(m, dict):
            m = r  # the earlier scripts' lines carried the machine fields at the top level
        if not m.get("cpu"):  # an early line without the machine: nothing to name
            continue
        gpu = m.get("gpu") or "no GPU"
        name = (
            f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {gpu}, torch {m.get('torch', '?')}"
        )
        if name not in names:
            names.append(name)
        load = m.get("loadavg_1m", m.get("load_avg_1m"))
        if isinstance(load, int | float):
            loads.append(load)
    load = f"; 1-min load {min(loads):.1f}-{max(loads):.1f}" if loads else ""
    return "Machine: " + (" / ".join(names) or "not recorded") + load


def render(paths: list[Path]) -> str:
    """Markdown for every JSONL file in ``paths``: grouped by kind and sub-measurement."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for path in paths:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise SystemExit(f"{path}:{n}: not a JSON line ({err.msg})") from None
            kind = str(rec.get("bench") or rec.get("benchmark") or path.stem)
            key = f"{kind} ({rec['what']})" if "what" in rec else kind
            groups.setdefault(key, []).append(rec)
    out = []
    for key, recs in groups.items():
        cols = COLUMNS.get(key) or _flat_columns(recs)
        out += [f"### {key}", "", machine_line(recs), ""]
        out.append("| " + " | ".join(cols) + " |")
        out.append("|" + "---|" * len(cols))
        for r in recs:
            cells = (_cell(_get(r, c), None if c in FULL_CELL else MAX_CELL) for c in cols)
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)
