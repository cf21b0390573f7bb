"""An experiment as a YAML file: rows x seeds x fusions x budget, dataset and detector by name.

The file's keys (``experiments/real_wider.yaml`` is a commented example):

* ``name``, ``title``: the run's name and the report's heading.
* ``dataset``: ``hook`` (a registered dataset hook: ``wider_face`` or ``coco``, see
  :mod:`gan_detect.experiment.datasets`) and that hook's inputs (paths, split).
* ``proposals``: ``arch`` (a built-in detector), ``settings`` (its keyword arguments), ``top_k``.
* ``seeds``, ``core_rows`` (trained for every seed), ``ablation_seeds`` (``null``: the first seed,
  ``all``, or a list), ``fusions``, ``bootstrap`` (resamples per interval).
* ``budget``: named sizes and schedule, referred to as ``${budget.<key>}`` in ``config``.
* ``rows``: ``{key, label, overrides}``; ``inference_variants``: methods post-processed from a
  row's same G + D outputs with other inference options.
* ``comparisons``, ``diagnostics``: what the report compares and which diagnostics it runs.
* ``config``: every row's run config (gan_detect's schema) with ``${budget.*}``, ``${dataset.*}``,
  ``${prep.*}`` (what the dataset hook prepared) and ``${run.out|seed|row|proposals}``.
* ``quick``: overrides merged in by ``--quick`` (a small check of the whole chain).

``${data:PATH}`` is ``$GAN_DETECT_DATA/PATH`` (default ``../shared/data``), made absolute.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gan_detect.utils.errors import InputError

TOP_KEYS = {
    "name",
    "title",
    "dataset",
    "proposals",
    "seeds",
    "core_rows",
    "ablation_seeds",
    "fusions",
    "bootstrap",
    "budget",
    "rows",
    "inference_variants",
    "comparisons",
    "diagnostics",
    "config",
    "quick",
}
# Resamples per interval at most: 100k x a few hundred images of float64 weights is already
# hundreds of MB per table.
MAX_BOOTSTRAP = 100_000


def data_root() -> Path:
    """``$GAN_DETECT_DATA`` or ``../shared/data`` (from the working directory), absolute."""
    return Path(os.environ.get("GAN_DETECT_DATA", "../shared/data")).resolve()


def _data_path(p: str = "") -> str:
    return str(data_root() / p)


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("data"):
        # register_resolver since omegaconf 2.4 (register_new_resolver warns there).
        register = getattr(OmegaConf, "register_resolver", None) or OmegaConf.register_new_resolver
        register("data", _data_path)


@dataclass
class RowSpec:
    """One trained model of the table (every fusion is evaluated from the same run)."""

    key: str
    label: str
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferenceVariant:
    """A method post-processed from ``row``'s same G + D outputs with other ``options``."""

    key: str
    label: str
    row: str
    options: dict[str, Any]


@dataclass
class ExperimentSpec:
    """A loaded, validated experiment file (``config`` keeps its ``${...}`` until a row)."""

    path: Path
    name: str
    title: str
    dataset: dict[str, Any]
    proposals: dict[str, Any]
    seeds: list[int]
    core_rows: list[str]
    ablation_seeds: list[int]
    fusions: list[str]
    bootstrap: int
    budget: dict[str, Any]
    rows: list[RowSpec]
    inference_variants: list[InferenceVariant]
    comparisons: list[dict[str, Any]]
    diagnostics: dict[str, dict[str, Any]]
    config: Any  # omegaconf.DictConfig, unresolved
    quick: bool = False

    @property
    def labels(self) -> dict[str, str]:
        """Row and inference-variant key -> label."""
        return {r.key: r.label for r in self.rows} | {
            v.key: v.label for v in self.inference_variants
        }

    def row(self, key: str) -> RowSpec:
        return next(r for r in self.rows if r.key == key)

    def schedule(self) -> list[tuple[int, RowSpec]]:
        """(seed, row) in training order: the core rows of every seed first, then the others
        for the ablation seeds (an interrupted budget still leaves the seeded comparison whole)."""
        core = [(s, r) for s in self.seeds for r in self.rows if r.key in self.core_rows]
        rest = [
            (s, r)
            for s in self.seeds
            for r in self.rows
            if r.key not in self.core_rows and s in self.ablation_seeds
        ]
        return core + rest

    def row_config(
        self, row: RowSpec, seed: int, out: Path, prep: dict[str, Any]
    ) -> dict[str, Any]:
        """The raw run config of one row and seed (validated by gan_detect's schema on use)."""
        from omegaconf import OmegaConf

        from gan_detect.experiment.rows import keep_known_variant_keys, merge

        _register_resolvers()
        run = {"out": str(out), "seed": seed, "row": row.key, "proposals": str(out / "proposals")}
        root = OmegaConf.create(
            {
                "budget": self.budget,
                "dataset": self.dataset,
                "prep": prep,
                "run": run,
                "config": self.config,
            }
        )
        try:
            whole: Any = OmegaConf.to_container(root, resolve=True)
            raw = whole["config"]
        except Exception as err:  # noqa: BLE001 - omegaconf's interpolation errors, one line
            raise InputError(f"{self.path}: config: {str(err).splitlines()[0]}") from None
        return keep_known_variant_keys(merge(raw, row.overrides))  # type: ignore[arg-type]


def _err(path: Path, key: str, msg: str) -> InputError:
    return InputError(f"{path}: {key}: {msg}")


def load_experiment(
    path: str | Path,
    quick: bool = False,
    overrides: list[str] | tuple[str, ...] = (),
    seeds: list[int] | None = None,
    rows: list[str] | None = None,
    bootstrap: int | None = None,
) -> ExperimentSpec:
    """Read and check an experiment file; ``quick`` merges its ``quick`` section, ``overrides``
    are ``key=value`` dotted paths (``budget.epochs=3``); ``seeds`` / ``rows`` / ``bootstrap``
    replace the file's (``rows`` keeps only those row keys)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    _register_resolvers()
    p = Path(path)
    if not p.is_file():
        from gan_detect.experiment import builtin_experiments

        named = builtin_experiments().get(str(path))
        if named is None:
            raise InputError(
                f"no experiment file {p} (built in: {', '.join(sorted(builtin_experiments()))})"
            )
        p = named
    import yaml

    cfg: Any
    try:
        cfg = OmegaConf.load(p)
    except (OmegaConfBaseException, ValueError, OSError, yaml.YAMLError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"{p}: not a readable YAML experiment ({first})") from None
    if not OmegaConf.is_dict(cfg):
        raise InputError(f"{p}: an experiment file is a mapping of keys, got a list or a value")
    unknown = sorted(set(cfg.keys()) - TOP_KEYS)  # type: ignore[arg-type]
    if unknown:
        raise _err(p, unknown[0], f"unknown key (known: {', '.join(sorted(TOP_KEYS))})")
    quick_part = cfg.pop("quick", None)
    if quick and quick_part is not None:
        cfg = OmegaConf.merge(cfg, quick_part)
    for item in overrides:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise InputError(f"--set {item!r}: expected key=value (e.g. budget.epochs=3)")
        if key.split(".")[0] not in TOP_KEYS:
            raise InputError(f"--set {item!r}: unknown key {key.split('.')[0]!r}")
        import yaml

        try:
            parsed = yaml.safe_load(value) if value else None
        except yaml.YAMLError:
            raise InputError(f"--set {item!r}: the value is not YAML") from None
        OmegaConf.update(cfg, key, parsed)
    try:
        plain = OmegaConf.to_container(cfg, resolve=False)
    except OmegaConfBaseException as err:
        raise InputError(f"{p}: {str(err).splitlines()[0]}") from None
    assert isinstance(plain, dict)

    def need(key: str, kind: type | tuple[type, ...]) -> Any:
        if key not in plain:
            raise _err(p, key, "missing")
        v = plain[key]
        if not isinstance(v, kind):
            raise _err(p, key, f"expected {getattr(kind, '__name__', kind)}, got {v!r}")
        return v

    def resolved(key: str) -> Any:
        try:
            return OmegaConf.to_container(cfg[key], resolve=True)
        except OmegaConfBaseException as err:
            raise _err(p, key, str(err).splitlines()[0]) from None

    name = str(need("name", str))
    dataset = (
        resolved("dataset") if OmegaConf.is_dict(cfg.get("dataset")) else need("dataset", dict)
    )
    from gan_detect.experiment.datasets import DATASET_HOOKS

    if dataset.get("hook") not in DATASET_HOOKS:
        raise _err(
            p, "dataset.hook", f"{dataset.get('hook')!r} is not a dataset hook "
            f"(known: {', '.join(sorted(DATASET_HOOKS))})"
        )  # fmt: skip
    props = resolved("proposals") if "proposals" in plain else {}
    if not isinstance(props.get("arch"), str):
        raise _err(p, "proposals.arch", "missing (a built-in detector name, e.g. retinaface)")
    props.setdefault("settings", {})
    if not isinstance(props["settings"], dict):
        raise _err(p, "proposals.settings", "expected a mapping of the detector's options")
    file_seeds = need("seeds", list)
    use_seeds = list(seeds) if seeds is not None else file_seeds
    if not use_seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in use_seeds):
        raise _err(p, "seeds", f"expected a non-empty list of integers, got {use_seeds!r}")
    if len(set(use_seeds)) != len(use_seeds):
        raise _err(p, "seeds", f"a seed is listed twice: {use_seeds} (it would count twice)")
    boot = int(bootstrap if bootstrap is not None else plain.get("bootstrap", 1000))
    if not 0 <= boot <= MAX_BOOTSTRAP:
        raise _err(p, "bootstrap", f"{boot} resamples: use 0 (no intervals) to {MAX_BOOTSTRAP}")
    budget = resolved("budget") if "budget" in plain else {}
    row_specs: list[RowSpec] = []
    for i, r in enumerate(need("rows", list)):
        if not isinstance(r, dict) or not isinstance(r.get("key"), str):
            raise _err(p, f"rows[{i}]", "expected {key: ..., label: ..., overrides: {...}}")
        extra = set(r) - {"key", "label", "overrides"}
        if extra:
            raise _err(p, f"rows[{i}].{sorted(extra)[0]}", "unknown key (key, label, overrides)")
        row_specs.append(RowSpec(r["key"], str(r.get("label", r["key"])), r.get("overrides") or {}))
    keys = [r.key for r in row_specs]
    if len(set(keys)) != len(keys):
        raise _err(p, "rows", f"a row key is listed twice: {keys}")
    if rows is not None:
        bad = [k for k in rows if k not in keys]
        if bad:
            raise InputError(f"--rows: unknown row {bad[0]!r} in {p} (rows: {', '.join(keys)})")
        row_specs = [r for r in row_specs if r.key in rows]
    from gan_detect.config.sections import VARIANT_CONFIGS

    base_variant = str(OmegaConf.select(cfg, "config.variant.name", default=""))
    row_specs = [
        r
        for r in row_specs
        if r.overrides.get("variant", {}).get("name", base_variant) in VARIANT_CONFIGS
    ]
    fusions = list(plain.get("fusions") or ["d_only"])
    from gan_detect.config.schema import SCORE_FUSIONS

    for f in fusions:
        if f not in SCORE_FUSIONS:
            raise _err(p, "fusions", f"{f!r} is not a score fusion ({', '.join(SCORE_FUSIONS)})")
    core = list(plain.get("core_rows") or keys)
    for k in core:
        if k not in keys:
            raise _err(p, "core_rows", f"{k!r} is not a row key ({', '.join(keys)})")
    abl = plain.get("ablation_seeds")
    abl_seeds = use_seeds[:1] if abl is None else use_seeds if abl == "all" else list(abl)
    variants = []
    for i, v in enumerate(plain.get("inference_variants") or []):
        if not isinstance(v, dict) or v.get("row") not in keys:
            raise _err(p, f"inference_variants[{i}].row", f"must name a row ({', '.join(keys)})")
        variants.append(
            InferenceVariant(
                v["key"], str(v.get("label", v["key"])), v["row"], v.get("options") or {}
            )
        )
    from gan_detect.experiment.report import COMPARISON_KINDS, DIAGNOSTICS

    comparisons = list(plain.get("comparisons") or [])
    for i, c in enumerate(comparisons):
        kinds = set(c) - {"title"}
        if not isinstance(c.get("title"), str) or not kinds <= set(COMPARISON_KINDS):
            raise _err(
                p, f"comparisons[{i}]", "expected {title: ..., and any of "
                f"{', '.join(COMPARISON_KINDS)}}}"
            )  # fmt: skip
    diagnostics = dict(plain.get("diagnostics") or {})
    for d in diagnostics:
        if d not in DIAGNOSTICS:
            raise _err(p, f"diagnostics.{d}", f"unknown (known: {', '.join(DIAGNOSTICS)})")
    if not OmegaConf.is_dict(cfg.get("config")):
        raise _err(p, "config", "missing: the rows' run config")
    return ExperimentSpec(
        path=p.resolve(),
        name=name,
        title=str(plain.get("title", name)),
        dataset=dataset,
        proposals=props,
        seeds=use_seeds,
        core_rows=core,
        ablation_seeds=abl_seeds,
        fusions=fusions,
        bootstrap=boot,
        budget=budget,
        rows=row_specs,
        inference_variants=[v for v in variants if v.row in {r.key for r in row_specs}],
        comparisons=comparisons,
        diagnostics=diagnostics,
        config=cfg["config"],
        quick=quick,
    )
