"""Prior configuration: TabICL-compatible defaults, argument validation, and the JSON the core reads.

Every check here runs before any generation and raises ``ValueError`` / ``TypeError`` naming the
argument, the value given and what is allowed. Hyper-parameter dictionaries are checked by the
Rust core when the engine is built (also before any work), with messages in the same form.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from typing import Any

from tabfm.prior._graph_config import as_graph_config

PRIOR_TYPES = ("mlp_scm", "tree_scm", "mix_scm", "graph_scm", "dummy")

#: The simple activations of the MLP SCM, each applied behind the standardise + random-scale wrapper.
SIMPLE_ACTIVATIONS = (
    "tanh",
    "leaky_relu",
    "elu",
    "identity",
    "selu",
    "silu",
    "relu",
    "softplus",
    "relu6",
    "hardtanh",
    "sign",
    "rbf",
    "exp",
    "sqrt_abs",
    "unit_interval_indicator",
    "sine",
    "square",
    "abs",
)

#: The 56 default choices: 18 simple + 10 x random Fourier function + 28 x "random_choice"
#: (a layer that picks uniformly among the first 28 when it is built), as TabICL's list.
DEFAULT_ACTIVATIONS = (*SIMPLE_ACTIVATIONS, *(["random_function"] * 10), *(["random_choice"] * 28))

DEFAULT_FIXED_HP: dict[str, Any] = {
    "mix_probs": (0.7, 0.3),
    "tree_model": "xgboost",
    "tree_depth_lambda": 0.5,
    "tree_n_estimators_lambda": 0.5,
    "balanced": False,
    "multiclass_ordered_prob": 0.0,
    "cat_prob": 0.2,
    "max_categories": float("inf"),
    "scale_by_max_features": False,
    "permute_features": True,
    "permute_labels": True,
    "is_causal": False,
}

DEFAULT_SAMPLED_HP: dict[str, Any] = {
    "multiclass_type": {"distribution": "meta_choice", "choice_values": ["value", "rank"]},
    "mlp_activations": {"distribution": "meta_choice_mixed", "choice_values": list(DEFAULT_ACTIVATIONS)},
    "block_wise_dropout": {"distribution": "meta_choice", "choice_values": [True, False]},
    "mlp_dropout_prob": {"distribution": "meta_beta", "scale": 0.9, "min": 0.1, "max": 5.0},
    "num_causes": {
        "distribution": "meta_trunc_norm_log_scaled",
        "max_mean": 12,
        "min_mean": 1,
        "round": True,
        "lower_bound": 1,
    },
    "y_is_effect": {"distribution": "meta_choice", "choice_values": [True, False]},
    "in_clique": {"distribution": "meta_choice", "choice_values": [True, False]},
    "sort_features": {"distribution": "meta_choice", "choice_values": [True, False]},
    "num_layers": {
        "distribution": "meta_trunc_norm_log_scaled",
        "max_mean": 6,
        "min_mean": 1,
        "round": True,
        "lower_bound": 2,
    },
    "hidden_dim": {
        "distribution": "meta_trunc_norm_log_scaled",
        "max_mean": 130,
        "min_mean": 5,
        "round": True,
        "lower_bound": 4,
    },
    "init_std": {
        "distribution": "meta_trunc_norm_log_scaled",
        "max_mean": 10.0,
        "min_mean": 0.01,
        "round": False,
        "lower_bound": 0.0,
    },
    "noise_std": {
        "distribution": "meta_trunc_norm_log_scaled",
        "max_mean": 0.3,
        "min_mean": 0.0001,
        "round": False,
        "lower_bound": 0.0,
    },
    "sampling": {"distribution": "meta_choice", "choice_values": ["normal", "mixed", "uniform"]},
    "pre_sample_cause_stats": {"distribution": "meta_choice", "choice_values": [True, False]},
    "pre_sample_noise_std": {"distribution": "meta_choice", "choice_values": [True, False]},
}

# Fixed keys the core reads directly; any other key of scm_fixed_hp must be a sampled key
# (a constant in place of its distribution).
_CORE_FIXED = (
    "mix_probs",
    "tree_depth_lambda",
    "tree_n_estimators_lambda",
    "balanced",
    "multiclass_ordered_prob",
    "cat_prob",
    "max_categories",
    "scale_by_max_features",
    "permute_features",
    "permute_labels",
)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int(name: str, v: Any, lo: int | None = None, hi: int | None = None) -> int:
    if not _is_int(v):
        raise TypeError(f"{name}={v!r} is invalid: expected an int, got {type(v).__name__}")
    if lo is not None and v < lo:
        raise ValueError(f"{name}={v!r} is invalid: must be >= {lo}")
    if hi is not None and v > hi:
        raise ValueError(f"{name}={v!r} is invalid: must be <= {hi}")
    return v


def _bool(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"{name}={v!r} is invalid: expected True or False, got {type(v).__name__}")
    return v


def _train_size(min_train_size: Any, max_train_size: Any, shortest_seq_len: int) -> dict[str, Any]:
    for name, v in (("min_train_size", min_train_size), ("max_train_size", max_train_size)):
        if not _is_real(v):
            raise TypeError(f"{name}={v!r} is invalid: expected an int (row count) or a float (fraction)")
    if _is_int(min_train_size) and _is_int(max_train_size):
        if not 0 < min_train_size < max_train_size:
            raise ValueError(
                f"min_train_size={min_train_size}, max_train_size={max_train_size} are invalid: "
                "row counts must satisfy 0 < min_train_size < max_train_size"
            )
        if max_train_size - 1 >= shortest_seq_len:
            raise ValueError(
                f"max_train_size={max_train_size} is invalid: train sizes are drawn from "
                f"[min_train_size, max_train_size) and must stay below the shortest seq_len ({shortest_seq_len})"
            )
        return {"kind": "count", "min": min_train_size, "max": max_train_size}
    if isinstance(min_train_size, float) and isinstance(max_train_size, float):
        if not 0.0 < min_train_size <= max_train_size < 1.0:
            raise ValueError(
                f"min_train_size={min_train_size}, max_train_size={max_train_size} are invalid: "
                "fractions must satisfy 0 < min_train_size <= max_train_size < 1"
            )
        return {"kind": "fraction", "min": min_train_size, "max": max_train_size}
    raise ValueError(
        f"min_train_size={min_train_size!r}, max_train_size={max_train_size!r} are invalid: "
        "both must be ints (row counts) or both floats (fractions of seq_len)"
    )


def _fixed_hp(fixed: Any) -> dict[str, Any]:
    if not isinstance(fixed, Mapping):
        raise TypeError(f"scm_fixed_hp={fixed!r} is invalid: expected a dict")
    merged = {**DEFAULT_FIXED_HP, **fixed}
    out: dict[str, Any] = {"overrides": {}}
    for key, value in merged.items():
        if key == "tree_model":
            if value != "xgboost":
                raise ValueError(
                    f"scm_fixed_hp['tree_model']={value!r} is invalid: tabfm implements the boosted "
                    "multi-output trees of the 'xgboost' setting only"
                )
        elif key == "max_categories":
            if value is None or (isinstance(value, float) and math.isinf(value)):
                out[key] = None
            elif _is_real(value) and value == int(value) and value >= 2:
                out[key] = int(value)
            else:
                raise ValueError(
                    f"scm_fixed_hp['max_categories']={value!r} is invalid: an integer >= 2 or inf"
                )
        elif key == "mix_probs":
            if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_real(p) for p in value)):
                raise ValueError(
                    f"scm_fixed_hp['mix_probs']={value!r} is invalid: two probabilities (mlp, tree) summing to 1"
                )
            out[key] = [float(value[0]), float(value[1])]
        elif key in ("balanced", "scale_by_max_features", "permute_features", "permute_labels"):
            out[key] = _bool(f"scm_fixed_hp[{key!r}]", value)
        elif key in ("tree_depth_lambda", "tree_n_estimators_lambda", "multiclass_ordered_prob", "cat_prob"):
            if not _is_real(value):
                raise TypeError(f"scm_fixed_hp[{key!r}]={value!r} is invalid: expected a number")
            out[key] = float(value)
        elif key in DEFAULT_SAMPLED_HP or key == "is_causal":
            out["overrides"][key] = value
        else:
            allowed = sorted({*DEFAULT_FIXED_HP, *DEFAULT_SAMPLED_HP})
            raise ValueError(f"scm_fixed_hp key {key!r} is unknown: allowed keys are {allowed}")
    return out


def _sampled_hp(sampled: Any) -> dict[str, Any]:
    if not isinstance(sampled, Mapping):
        raise TypeError(f"scm_sampled_hp={sampled!r} is invalid: expected a dict")
    merged = {**DEFAULT_SAMPLED_HP, **sampled}
    out = {}
    for key, spec in merged.items():
        if not spec:  # None or {} removes the entry, as in TabICL
            continue
        if not isinstance(spec, Mapping) or "distribution" not in spec:
            raise ValueError(
                f"scm_sampled_hp[{key!r}]={spec!r} is invalid: expected a dict with a 'distribution' key "
                "(e.g. {'distribution': 'meta_choice', 'choice_values': [...]})"
            )
        spec = dict(spec)
        if key == "mlp_activations":
            values = spec.get("choice_values", [])
            bad = [v for v in values if not isinstance(v, str)]
            if bad:
                raise ValueError(
                    f"scm_sampled_hp['mlp_activations'] choice_values contain {bad[0]!r}: tabfm takes activation "
                    f"names, one of {[*SIMPLE_ACTIVATIONS, 'random_function', 'random_choice']}"
                )
        out[key] = spec
    return out


def build_config(
    *,
    prior_type: Any,
    seed: Any,
    batch_size: Any,
    batch_size_per_gp: Any,
    batch_size_per_subgp: Any,
    min_features: Any,
    max_features: Any,
    log_n_features: Any,
    max_classes: Any,
    regression: Any,
    min_seq_len: Any,
    max_seq_len: Any,
    log_seq_len: Any,
    seq_len_per_gp: Any,
    min_train_size: Any,
    max_train_size: Any,
    replay_small: Any,
    scm_fixed_hp: Any,
    scm_sampled_hp: Any,
    graph_config: Any = None,
    seq_lens_multiple_of: Any = 1,
) -> dict[str, Any]:
    """Validates the arguments of :class:`PriorDataset` and returns the core's configuration."""
    if prior_type not in PRIOR_TYPES:
        raise ValueError(f"prior_type={prior_type!r} is invalid: allowed values are {list(PRIOR_TYPES)}")
    seed = _int("seed", seed, 0, 2**64 - 1)
    batch_size = _int("batch_size", batch_size, 1)
    batch_size_per_gp = _int("batch_size_per_gp", batch_size_per_gp, 1)
    if batch_size_per_subgp is None:
        batch_size_per_subgp = batch_size_per_gp
    batch_size_per_subgp = _int("batch_size_per_subgp", batch_size_per_subgp, 1)
    max_features = _int("max_features", max_features, 1, 100_000)
    min_features = _int("min_features", min_features, 1)
    if min_features > max_features:
        raise ValueError(f"min_features={min_features} is invalid: must be <= max_features={max_features}")
    regression = _bool("regression", regression)
    max_classes = _int("max_classes", max_classes)
    if regression:
        max_classes = 0  # as TabICL: regression ignores max_classes
    elif max_classes < 2:
        raise ValueError(f"max_classes={max_classes} is invalid: classification needs max_classes >= 2")
    max_seq_len = _int("max_seq_len", max_seq_len, 2)
    if min_seq_len is not None:
        min_seq_len = _int("min_seq_len", min_seq_len, 2)
        if min_seq_len >= max_seq_len:
            raise ValueError(
                f"min_seq_len={min_seq_len} is invalid: must be < max_seq_len={max_seq_len} (or None for a fixed length)"
            )
    log_n_features = _bool("log_n_features", log_n_features)
    log_seq_len = _bool("log_seq_len", log_seq_len)
    seq_len_per_gp = _bool("seq_len_per_gp", seq_len_per_gp)
    replay_small = _bool("replay_small", replay_small)
    shortest = min_seq_len if min_seq_len is not None else max_seq_len
    if replay_small:
        shortest = min(shortest, 200)
    train_size = _train_size(min_train_size, max_train_size, shortest)
    k = _int("seq_lens_multiple_of", seq_lens_multiple_of, 1)
    if 2 * k > shortest:
        raise ValueError(
            f"seq_lens_multiple_of={k} is invalid: at most half the shortest seq_len ({shortest}), so that "
            "train and test keep at least one multiple each"
        )
    if graph_config is not None and prior_type != "graph_scm":
        raise ValueError(
            f"graph_config is only used with prior_type='graph_scm' (got prior_type={prior_type!r}): remove it"
        )
    graph = as_graph_config(graph_config)
    return {
        "prior_type": prior_type,
        "seed": seed,
        "batch_size": batch_size,
        "batch_size_per_gp": batch_size_per_gp,
        "batch_size_per_subgp": batch_size_per_subgp,
        "min_features": min_features,
        "max_features": max_features,
        "log_n_features": log_n_features,
        "max_classes": max_classes,
        "regression": regression,
        "min_seq_len": min_seq_len,
        "max_seq_len": max_seq_len,
        "log_seq_len": log_seq_len,
        "seq_len_per_gp": seq_len_per_gp,
        "train_size": train_size,
        "replay_small": replay_small,
        "fixed_hp": _fixed_hp(scm_fixed_hp),
        "sampled_hp": _sampled_hp(scm_sampled_hp),
        "graph": graph.to_core(),
        "seq_lens_multiple_of": k,
    }


def to_json(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, allow_nan=False)


def defaults() -> tuple[dict[str, Any], dict[str, Any]]:
    """Fresh copies of the default hyper-parameter dictionaries."""
    return copy.deepcopy(DEFAULT_FIXED_HP), copy.deepcopy(DEFAULT_SAMPLED_HP)
