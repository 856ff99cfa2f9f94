"""Configuration of the causal-DAG prior (``prior_type="graph_scm"``).

Sections mirror dagzoo's (dataset, graph, mechanism, noise, shift, missingness, filter). Build one
from keyword sections, a nested dict, a YAML file, or ``--set``-style dotted overrides::

    GraphConfig(missingness=MissingnessSection(mechanism="mnar", rate=0.2))
    GraphConfig.from_dict({"graph": {"n_nodes_max": 16}, "noise": {"family": "laplace"}})
    GraphConfig.from_yaml("prior.yaml").with_overrides(["shift.mode=mixed"])
    GraphConfig.tabicl()  # TabICL 2.2.0's graph_scm: no structural target constraints

Every field is checked when the config is built; errors name the field, the value and what is
allowed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FAMILIES = ("mlp", "tree", "discretization", "linear", "quadratic", "gp", "em", "product")
COMPOSITIONS = ("concat", "stack")
AGGREGATIONS = ("sum", "product", "max", "logsumexp")
MATRIX_KINDS = ("gaussian", "weights", "singular_values", "kernel", "activation")
CATEGORICAL_MODES = (
    "neighbor_id",
    "neighbor_disc",
    "neighbor_func",
    "neighbor_int",
    "softmax_id",
    "softmax_disc",
    "softmax_int",
)
NOISE_FAMILIES = ("gaussian", "laplace", "student_t", "mixture")
SHIFT_MODES = ("off", "graph_drift", "mechanism_drift", "noise_drift", "mixed", "custom")
MISSING_MECHANISMS = ("none", "mcar", "mar", "mnar")

#: (graph, mechanism, variance) scales of each shift mode; "custom" takes explicit values only.
SHIFT_PRESETS = {
    "off": (0.0, 0.0, 0.0),
    "graph_drift": (0.5, 0.0, 0.0),
    "mechanism_drift": (0.0, 0.5, 0.0),
    "noise_drift": (0.0, 0.0, 0.5),
    "mixed": (1 / 3, 1 / 3, 1 / 3),
    "custom": (0.0, 0.0, 0.0),
}


def _where(section: str, name: str) -> str:
    return f"graph_config.{section}.{name}"


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _real(section: str, name: str, v: Any, lo: float, hi: float) -> float:
    if not _is_real(v) or not math.isfinite(v):
        raise TypeError(f"{_where(section, name)}={v!r} is invalid: expected a finite number in [{lo}, {hi}]")
    if not lo <= v <= hi:
        raise ValueError(f"{_where(section, name)}={v!r} is invalid: must be in [{lo}, {hi}]")
    return float(v)


def _int(section: str, name: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{_where(section, name)}={v!r} is invalid: expected an int in [{lo}, {hi}]")
    if not lo <= v <= hi:
        raise ValueError(f"{_where(section, name)}={v!r} is invalid: must be in [{lo}, {hi}]")
    return v


def _bool(section: str, name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"{_where(section, name)}={v!r} is invalid: expected True or False")
    return v


def _choice(section: str, name: str, v: Any, allowed: tuple[str, ...]) -> str:
    if v not in allowed:
        raise ValueError(f"{_where(section, name)}={v!r} is invalid: allowed values are {list(allowed)}")
    return v


def _subset(section: str, name: str, v: Any, allowed: tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(v, str) or not isinstance(v, Iterable):
        raise TypeError(
            f"{_where(section, name)}={v!r} is invalid: expected a list drawn from {list(allowed)}"
        )
    v = tuple(v)
    if not v:
        raise ValueError(f"{_where(section, name)}=[] is invalid: choose at least one of {list(allowed)}")
    for item in v:
        if item not in allowed:
            raise ValueError(f"{_where(section, name)} contains {item!r}: allowed values are {list(allowed)}")
    return v


@dataclass(frozen=True)
class DatasetSection:
    """Feature types. The categorical share is ``min + (max - min) * clip(U(-0.5, 1.2), 0, 1)``."""

    categorical_ratio_min: float = 0.0
    categorical_ratio_max: float = 1.0
    #: Largest number of categories (TabICL keeps 9; larger values draw a per-dataset limit).
    max_categorical_cardinality: int = 9

    def __post_init__(self) -> None:
        s = "dataset"
        lo = _real(s, "categorical_ratio_min", self.categorical_ratio_min, 0.0, 1.0)
        _real(s, "categorical_ratio_max", self.categorical_ratio_max, lo, 1.0)
        # Softmax converters make the node width grow with the cardinality: keep it bounded.
        _int(s, "max_categorical_cardinality", self.max_categorical_cardinality, 2, 256)


@dataclass(frozen=True)
class GraphSection:
    """The DAG: node count log-uniform in [n_nodes_min, n_nodes_max], Cauchy edge logits."""

    n_nodes_min: int = 2
    n_nodes_max: int = 32
    #: Added to every edge logit: larger values give denser graphs.
    edge_logit_offset: float = 0.0
    #: Features sit on a random subset of nodes (several columns may share a node).
    subsample_feature_nodes: bool = True

    def __post_init__(self) -> None:
        s = "graph"
        lo = _int(s, "n_nodes_min", self.n_nodes_min, 1, 1024)
        _int(s, "n_nodes_max", self.n_nodes_max, lo, 1024)
        _real(s, "edge_logit_offset", self.edge_logit_offset, -50.0, 50.0)
        _bool(s, "subsample_feature_nodes", self.subsample_feature_nodes)


def _default_families() -> dict[str, float]:
    return {f: 1.0 for f in FAMILIES}


@dataclass(frozen=True)
class MechanismSection:
    """How nodes compute their values from their parents."""

    #: Relative weight of each function family; a weight of 0 removes the family.
    function_families: Mapping[str, float] = field(default_factory=_default_families)
    compositions: tuple[str, ...] = COMPOSITIONS
    aggregations: tuple[str, ...] = AGGREGATIONS
    matrix_kinds: tuple[str, ...] = MATRIX_KINDS
    categorical_modes: tuple[str, ...] = CATEGORICAL_MODES
    #: Per-dataset random preferences for every discrete choice (family, activation, ...), so
    #: the nodes of one dataset share them. TabICL 2.2.0 draws them independently (False).
    correlated_choices: bool = False
    kumaraswamy_warping: bool = True
    #: Warp only the emitted column; the children see the raw value (TabICL's corrected mode).
    #: By default both are warped, which is what TabICL 2.2.0 produces.
    warp_emitted_only: bool = False
    warp_target: bool = True
    node_feature_importance: bool = True
    node_l2_norm: bool = True
    node_importance: bool = True
    #: Adds N(0, sigma^2) to every node, sigma ~ LogU(1e-5, 1).
    additive_node_noise: bool = False
    max_discretization_cardinality: int = 256

    def __post_init__(self) -> None:
        s = "mechanism"
        fam = self.function_families
        if not isinstance(fam, Mapping):
            raise TypeError(
                f"{_where(s, 'function_families')}={fam!r} is invalid: expected a dict of family -> weight "
                f"with families from {list(FAMILIES)}"
            )
        for k, w in fam.items():
            if k not in FAMILIES:
                raise ValueError(
                    f"{_where(s, 'function_families')} has unknown family {k!r}: allowed are {list(FAMILIES)}"
                )
            _real(s, f"function_families[{k!r}]", w, 0.0, 1e6)
        # Families left out of a partial dict keep weight 1.
        merged = {**_default_families(), **fam}
        if sum(merged.values()) <= 0:
            raise ValueError(
                f"{_where(s, 'function_families')}={dict(fam)!r} is invalid: at least one weight > 0"
            )
        object.__setattr__(self, "function_families", merged)
        for name, allowed in (
            ("compositions", COMPOSITIONS),
            ("aggregations", AGGREGATIONS),
            ("matrix_kinds", MATRIX_KINDS),
            ("categorical_modes", CATEGORICAL_MODES),
        ):
            object.__setattr__(self, name, _subset(s, name, getattr(self, name), allowed))
        for name in (
            "correlated_choices",
            "kumaraswamy_warping",
            "warp_emitted_only",
            "warp_target",
            "node_feature_importance",
            "node_l2_norm",
            "node_importance",
            "additive_node_noise",
        ):
            _bool(s, name, getattr(self, name))
        _int(s, "max_discretization_cardinality", self.max_discretization_cardinality, 2, 1_000_000)


@dataclass(frozen=True)
class NoiseSection:
    """Distribution of every random parameter draw (root points, matrices, leaf values, centres).

    All families have unit variance before ``base_scale``; ``mixture`` picks one of gaussian,
    laplace and student_t per dataset with ``mixture_weights``.
    """

    family: str = "gaussian"
    base_scale: float = 1.0
    student_t_df: float = 5.0
    mixture_weights: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)

    def __post_init__(self) -> None:
        s = "noise"
        _choice(s, "family", self.family, NOISE_FAMILIES)
        _real(s, "base_scale", self.base_scale, 1e-6, 1e6)
        if _is_real(self.student_t_df) and self.student_t_df <= 2:
            raise ValueError(
                f"{_where(s, 'student_t_df')}={self.student_t_df!r} is invalid: must be > 2 (finite variance)"
            )
        _real(s, "student_t_df", self.student_t_df, 2.000001, 1e6)
        w = self.mixture_weights
        if isinstance(w, str) or not isinstance(w, Iterable) or len(tuple(w)) != 3:
            raise ValueError(
                f"{_where(s, 'mixture_weights')}={w!r} is invalid: 3 weights (gaussian, laplace, student_t)"
            )
        w = tuple(_real(s, "mixture_weights", v, 0.0, 1e6) for v in w)
        if sum(w) <= 0:
            raise ValueError(f"{_where(s, 'mixture_weights')}={w!r} is invalid: at least one weight > 0")
        object.__setattr__(self, "mixture_weights", w)


@dataclass(frozen=True)
class ShiftSection:
    """Prior shift: edge odds x 2^graph_scale, a tilt towards non-linear families, parameter
    variance x 2^variance_scale. A mode sets the scales left as None (see ``SHIFT_PRESETS``)."""

    mode: str = "off"
    graph_scale: float | None = None
    mechanism_scale: float | None = None
    variance_scale: float | None = None

    def __post_init__(self) -> None:
        s = "shift"
        _choice(s, "mode", self.mode, SHIFT_MODES)
        preset = SHIFT_PRESETS[self.mode]
        for name, default in zip(("graph_scale", "mechanism_scale", "variance_scale"), preset, strict=True):
            v = getattr(self, name)
            if v is None:
                object.__setattr__(self, name, default)
                continue
            v = _real(s, name, v, -10.0, 10.0)
            if self.mode == "off" and v != 0.0:
                raise ValueError(
                    f"{_where(s, name)}={v!r} is invalid with shift.mode='off': set a mode, e.g. 'custom'"
                )
            object.__setattr__(self, name, v)


@dataclass(frozen=True)
class MissingnessSection:
    """Missing cells (NaN in X, never in y), applied after the target is derived.

    ``rate`` is the requested fraction of active cells. MAR keeps a random
    ``mar_observed_fraction`` of the columns fully observed and masks the others with a
    logistic model of the observed ones; MNAR masks each cell through its own value.
    """

    mechanism: str = "none"
    rate: float = 0.0
    mar_observed_fraction: float = 0.5
    mar_logit_scale: float = 1.0
    mnar_logit_scale: float = 1.0

    def __post_init__(self) -> None:
        s = "missingness"
        _choice(s, "mechanism", self.mechanism, MISSING_MECHANISMS)
        rate = _real(s, "rate", self.rate, 0.0, 0.95)
        if rate >= 0.95:
            raise ValueError(f"{_where(s, 'rate')}={rate!r} is invalid: must be in [0, 0.95)")
        if self.mechanism == "none" and rate > 0:
            raise ValueError(
                f"{_where(s, 'rate')}={rate!r} is invalid with mechanism='none': choose 'mcar', 'mar' or 'mnar'"
            )
        if self.mechanism != "none" and rate == 0:
            raise ValueError(
                f"{_where(s, 'rate')}=0 is invalid with mechanism={self.mechanism!r}: must be > 0"
            )
        _real(s, "mar_observed_fraction", self.mar_observed_fraction, 0.0, 1.0)
        _real(s, "mar_logit_scale", self.mar_logit_scale, 0.0, 100.0)
        _real(s, "mnar_logit_scale", self.mnar_logit_scale, 0.0, 100.0)


@dataclass(frozen=True)
class FilterSection:
    """Structural target constraints (checked while sampling the layout) and the optional
    learnability test (out-of-bag ExtraTrees against a constant baseline, bootstrap p-value)."""

    min_target_indegree: int = 1
    min_target_relevant_features: int = 2
    min_target_relevant_fraction: float = 0.05
    learnability: bool = False
    learnability_pvalue: float = 0.05
    remove_trivial: bool = False
    trivial_threshold: float = 0.05
    n_estimators: int = 25
    max_depth: int = 6
    n_bootstrap: int = 200
    #: Attempts per dataset; when all fail the last one is emitted with ``valid=False``.
    max_attempts: int = 100

    def __post_init__(self) -> None:
        s = "filter"
        _int(s, "min_target_indegree", self.min_target_indegree, 0, 1024)
        _int(s, "min_target_relevant_features", self.min_target_relevant_features, 0, 100_000)
        _real(s, "min_target_relevant_fraction", self.min_target_relevant_fraction, 0.0, 1.0)
        _bool(s, "learnability", self.learnability)
        _real(s, "learnability_pvalue", self.learnability_pvalue, 0.0, 1.0)
        _bool(s, "remove_trivial", self.remove_trivial)
        _real(s, "trivial_threshold", self.trivial_threshold, 0.0, 1.0)
        _int(s, "n_estimators", self.n_estimators, 1, 10_000)
        _int(s, "max_depth", self.max_depth, 1, 64)
        _int(s, "n_bootstrap", self.n_bootstrap, 1, 1_000_000)
        _int(s, "max_attempts", self.max_attempts, 1, 100_000)


_SECTIONS = {
    "dataset": DatasetSection,
    "graph": GraphSection,
    "mechanism": MechanismSection,
    "noise": NoiseSection,
    "shift": ShiftSection,
    "missingness": MissingnessSection,
    "filter": FilterSection,
}


def _section(name: str, value: Any) -> Any:
    cls = _SECTIONS[name]
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"graph_config.{name}={value!r} is invalid: expected a dict or {cls.__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    for key in value:
        if key not in known:
            raise ValueError(f"graph_config.{name}.{key} is unknown: allowed fields are {sorted(known)}")
    return cls(**value)


@dataclass(frozen=True)
class GraphConfig:
    """All sections of the causal-DAG prior; defaults follow TabICL 2.2.0's graph_scm, plus
    dagzoo's structural target constraints (in-degree >= 1, >= 2 and >= 5 % relevant features)."""

    dataset: DatasetSection = field(default_factory=DatasetSection)
    graph: GraphSection = field(default_factory=GraphSection)
    mechanism: MechanismSection = field(default_factory=MechanismSection)
    noise: NoiseSection = field(default_factory=NoiseSection)
    shift: ShiftSection = field(default_factory=ShiftSection)
    missingness: MissingnessSection = field(default_factory=MissingnessSection)
    filter: FilterSection = field(default_factory=FilterSection)

    def __post_init__(self) -> None:
        for name in _SECTIONS:
            object.__setattr__(self, name, _section(name, getattr(self, name)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> GraphConfig:
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise TypeError(
                f"graph_config={data!r} is invalid: expected a dict of sections {list(_SECTIONS)}"
            )
        for key in data:
            if key not in _SECTIONS:
                raise ValueError(
                    f"graph_config section {key!r} is unknown: allowed sections are {list(_SECTIONS)}"
                )
        return cls(**{k: _section(k, v) for k, v in data.items()})

    @classmethod
    def from_yaml(cls, path: str | Path) -> GraphConfig:
        import yaml

        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"graph_config file {str(p)!r} does not exist")
        with p.open() as fh:
            data = yaml.safe_load(fh)
        try:
            return cls.from_dict(data or {})
        except (TypeError, ValueError) as e:
            raise type(e)(f"{p}: {e}") from None

    @classmethod
    def tabicl(cls) -> GraphConfig:
        """TabICL 2.2.0's graph_scm defaults: the target node is any node (no structural filter)."""
        return cls(
            filter=FilterSection(
                min_target_indegree=0, min_target_relevant_features=0, min_target_relevant_fraction=0.0
            )
        )

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for name in _SECTIONS:
            sec = dataclasses.asdict(getattr(self, name))
            out[name] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in sec.items()}
        return out

    def with_overrides(self, assignments: Iterable[str]) -> GraphConfig:
        """Applies ``section.field=value`` strings (values parsed as YAML, as dagzoo's ``--set``)."""
        import yaml

        data = self.to_dict()
        for a in assignments:
            if "=" not in a:
                raise ValueError(f"override {a!r} is invalid: expected section.field=value")
            path, raw = a.split("=", 1)
            parts = path.strip().split(".")
            if len(parts) != 2 or parts[0] not in _SECTIONS:
                raise ValueError(
                    f"override {a!r} is invalid: the key must be section.field with a section from {list(_SECTIONS)}"
                )
            data[parts[0]][parts[1]] = yaml.safe_load(raw)
        # Preset-derived shift scales are re-derived from the (possibly new) mode.
        if self.shift.mode != data["shift"]["mode"]:
            for k in ("graph_scale", "mechanism_scale", "variance_scale"):
                if data["shift"][k] == getattr(self.shift, k):
                    data["shift"][k] = None
        return GraphConfig.from_dict(data)

    def to_core(self) -> dict[str, Any]:
        """The sections as the Rust core reads them."""
        d = self.to_dict()
        fam = d["mechanism"].pop("function_families")
        d["mechanism"]["function_family_weights"] = [float(fam[f]) for f in FAMILIES]
        d["noise"]["mixture_weights"] = list(d["noise"]["mixture_weights"])
        return d


def as_graph_config(value: Any) -> GraphConfig:
    """Accepts a GraphConfig, a dict of sections, a YAML path, a preset name or None."""
    if value is None:
        return GraphConfig()
    if isinstance(value, GraphConfig):
        return value
    if isinstance(value, str) and value in ("default", "tabicl"):
        return GraphConfig() if value == "default" else GraphConfig.tabicl()
    if isinstance(value, (str, Path)):
        return GraphConfig.from_yaml(value)
    if isinstance(value, Mapping):
        return GraphConfig.from_dict(value)
    raise TypeError(
        f"graph_config={value!r} is invalid: expected a GraphConfig, a dict of sections, a YAML path, "
        "'default' or 'tabicl'"
    )
