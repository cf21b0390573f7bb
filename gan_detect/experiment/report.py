"""Tables, comparisons and the markdown report of an experiment (from per-image tables).

Every difference is B - A in AP points with a 95 % interval: over images (paired bootstrap) for
one seed, and over seeds and images together for several (:func:`gan_detect.metrics.bootstrap.
seed_bootstrap`). An interval covers the evaluation images (and the seeds when there are
several), not the machine or other data; every table says so (``interval_scope``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from gan_detect.metrics.resampling import RESOLUTION, interval_scope, is_resolved

# Kinds of comparison an experiment file may ask for (see :func:`build_comparisons`).
COMPARISON_KINDS = ("detector_vs_all", "row_vs_rows", "fusion_pairs", "pairs")
DIAGNOSTICS = ("auc_by_size", "per_class", "class_accuracy", "refinement_ap75")

# per seed -> method -> the method's per-image tables (one per protocol part)
Tables = dict[int, dict[str, list[Any]]]


def fmt_diff(d: Mapping[str, Any]) -> str:
    """``+1.23 [-0.40, +2.90]`` with a ``*`` when the interval clears 0 (``is_resolved``)."""
    if d.get("point") is None:
        return "n/a"
    if d.get("low") is None or d.get("high") is None:
        return f"{d['point']:+.2f}"
    mark = "*" if is_resolved(d["low"], d["high"]) else ""
    return f"{d['point']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]{mark}"


def cell(v: Mapping[str, Any]) -> str:
    """``mean ± std`` (one seed: the value alone)."""
    if v.get("mean") is None:
        return "n/a"
    return f"{v['mean']:.2f}" + (f" ± {v['std']:.2f}" if v.get("std") is not None else "")


def summarize(per_seed: Tables, renames: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """method -> column -> mean and between-seed std over the seeds it has (AP points)."""
    table: dict[str, dict[str, Any]] = {}
    methods = list(dict.fromkeys(m for s in sorted(per_seed) for m in per_seed[s]))
    for method in methods:
        seeds = sorted(s for s in per_seed if method in per_seed[s])
        vals: dict[str, list[float]] = {}
        for s in seeds:
            for t in per_seed[s][method]:
                ap = 100 * t.ap(np.ones((1, t.n_images)))[0]
                for m, v in zip(t.metrics, ap, strict=True):
                    vals.setdefault(renames.get(m, m), []).append(float(v))
        table[method] = {}
        for c, v in vals.items():
            arr = np.asarray(v, float)
            ok = np.isfinite(arr)
            table[method][c] = {
                "mean": float(arr[ok].mean()) if ok.any() else None,
                "std": float(np.std(arr[ok], ddof=1)) if ok.sum() > 1 else None,
                "per_seed": [float(x) if np.isfinite(x) else None for x in arr],
                "seeds": seeds,
            }
    return table


def compare(
    per_seed: Tables, a: str, b: str, n_boot: int, renames: Mapping[str, str]
) -> dict[str, Any]:
    """B - A over the seeds both methods have (A may be the detector, the same for every seed);
    with one seed this is the paired image bootstrap. Column -> ``SeedMetric.to_dict()``."""
    from gan_detect.metrics.bootstrap import seed_bootstrap

    seeds = sorted(s for s in per_seed if a in per_seed[s] and b in per_seed[s])
    out: dict[str, Any] = {}
    for part in range(len(per_seed[seeds[0]][a])):
        pairs = [(per_seed[s][a][part], per_seed[s][b][part]) for s in seeds]
        res = seed_bootstrap(pairs, n_boot=n_boot, seed=0)
        for m, r in res.metrics.items():
            out[renames.get(m, m)] = r.to_dict()
    return out


def build_comparisons(
    spec: Any,
    per_seed: Tables,
    detector: str,
    n_boot: int,
    renames: Mapping[str, str],
    label_of: Callable[[str], str],
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, str]]]:
    """The file's ``comparisons``: title -> display name -> column -> difference; and
    title -> display name -> ``"A|B"`` method keys (for tools that read results.json)."""
    first = per_seed[spec.seeds[0]]
    short = detector.removesuffix(" alone")
    labels = spec.labels
    rows = [r.key for r in spec.rows] + [v.key for v in spec.inference_variants]
    comparisons: dict[str, dict[str, Any]] = {}
    keys: dict[str, dict[str, str]] = {}
    for c in spec.comparisons:
        pairs: list[tuple[str, str, str]] = []  # display name, A, B
        if c.get("detector_vs_all"):
            pairs += [(f"{short} → {label_of(m)}", detector, m) for m in first if m != detector]
        if c.get("row_vs_rows"):
            base = c["row_vs_rows"]["base"]
            for f in c["row_vs_rows"].get("fusions", spec.fusions):
                for k in rows:
                    if k != base:
                        name = f"{labels.get(base, base)} → {labels.get(k, k)}, {f}"
                        pairs.append((name, f"{base} / {f}", f"{k} / {f}"))
        if c.get("fusion_pairs"):
            row = c["fusion_pairs"]["row"]
            lab = labels.get(row, row)
            for fa, fb in c["fusion_pairs"]["pairs"]:
                pairs.append((f"{lab} {fa} → {lab} {fb}", f"{row} / {fa}", f"{row} / {fb}"))
        for a, b in c.get("pairs") or []:
            pairs.append((f"{label_of(a)} → {label_of(b)}", a, b))
        body = {
            name: compare(per_seed, a, b, n_boot, renames)
            for name, a, b in pairs
            if a in first and b in first
        }
        comparisons[c["title"]] = body
        keys[c["title"]] = {name: f"{a}|{b}" for name, a, b in pairs if name in body}
    return comparisons, keys


def markdown(
    res: Mapping[str, Any],
    columns: Sequence[str],
    column_names: Mapping[str, str],
    label_of: Callable[[str], str],
    note: str = "",
) -> str:
    """The tables of a results.json as markdown."""
    names = [column_names.get(c, c) for c in columns]
    covers = interval_scope(res["num_val_images"], len(res["seeds"]))
    lines = [
        f"AP (%) on {res['num_val_images']} evaluation images, mean over seeds {res['seeds']} "
        f"(± between-seed std; one value: one seed); CPU: {res['cpu']}."
        + (f" *{note}" if note else ""),
        "",
        "| method | " + " | ".join(names) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for method, vals in res["table"].items():
        cells = [cell(vals.get(c, {})) for c in columns]
        lines.append(f"| {label_of(method)} | " + " | ".join(cells) + " |")
    for title, rows in res["comparisons"].items():
        if not rows:
            continue
        lines += [
            "",
            f"**{title}** (B − A in AP points, 95 % interval {covers}; * = resolved: it "
            f"clears 0 by more than {RESOLUTION:g})",
            "",
            "| A → B | " + " | ".join(names) + " |",
            "|---" * (len(columns) + 1) + "|",
        ]
        for name, diff in rows.items():
            cells = [fmt_diff(diff[c]["difference"]) if c in diff else "n/a" for c in columns]
            # A pair with a first-seed row (ablations, CARN-M) is compared on the seeds both
            # sides have: say so where the heading's seed count does not hold.
            n = min((len(d.get("a", [])) for d in diff.values()), default=len(res["seeds"]))
            if 0 < n < len(res["seeds"]):
                name += " (1 seed: interval over images only)" if n == 1 else f" ({n} seeds)"
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
