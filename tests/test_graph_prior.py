"""The causal-DAG prior (``prior_type="graph_scm"``): configuration errors, lineage properties,
filters and rejection counts, noise, shift and missingness."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tabfm import _core
from tabfm.prior import (
    FilterSection,
    GraphConfig,
    MissingnessSection,
    PriorDataset,
)
from tabfm.prior._config import to_json

SMALL = dict(batch_size=24, batch_size_per_gp=4, max_features=20, max_seq_len=256, n_jobs=2, seed=5)


def make(graph_config=None, **overrides) -> PriorDataset:
    return PriorDataset(**{**SMALL, "prior_type": "graph_scm", "graph_config": graph_config, **overrides})


def metas(ds: PriorDataset, indices=(0, 1)) -> list[tuple]:
    """(X, y, d, seq_len, meta) for every dataset of the given batches."""
    out = []
    for i in indices:
        X, y, d, seq_lens, _, meta = ds.get_batch_numpy(i, return_meta=True)
        for b in range(X.shape[0]):
            out.append((X[b, : seq_lens[b], : d[b]], y[b, : seq_lens[b]], int(d[b]), meta[b]))
    return out


# ------------------------------------------------------------------ batches and lineage


def test_batch_shape_labels_and_metadata() -> None:
    ds = make()
    X, y, d, seq_lens, train_sizes, meta = ds.get_batch(0, return_meta=True)
    assert X.shape == (24, 256, 20) and y.shape == (24, 256)
    assert (seq_lens == 256).all() and ((train_sizes > 0) & (train_sizes < 256)).all()
    for b, m in enumerate(meta):
        assert m["prior_type"] == "graph_scm" and m["valid"]
        assert 1 <= m["d"] == int(d[b]) <= m["num_features"] <= 20
        assert (X[b, :, m["d"] :] == 0).all(), "columns beyond d are zero padding"
        labels = y[b].long()
        assert labels.min() >= 0 and labels.max() < m["num_classes"]
        assert m["realised_classes"] == len(labels.unique())
        train, test = set(labels[: train_sizes[b]].tolist()), set(labels[train_sizes[b] :].tolist())
        assert train == test and len(train) >= 2, "train and test share one label set"
        assert set(m["categorical_columns"]) <= set(range(m["d"]))
        for c in m["categorical_columns"]:  # categorical codes: few distinct (scaled) values
            assert len(np.unique(X[b, :, c].numpy())) <= 9


def test_lineage_dag_is_acyclic_and_consistent() -> None:
    for _, _, d, m in metas(make()):
        lin = m["lineage"]
        n = lin["n_nodes"]
        assert 2 <= n <= 32
        assert len(lin["parents"]) == n and lin["n_edges"] == sum(len(p) for p in lin["parents"])
        for j, ps in enumerate(lin["parents"]):
            assert all(0 <= p < j for p in ps), "edges go from lower to higher node index: acyclic"
        assert len(lin["feature_nodes"]) == d and all(0 <= v < n for v in lin["feature_nodes"])
        computed = {node["node"] for node in lin["nodes"]}
        assert lin["target_node"] in computed and set(lin["feature_nodes"]) <= computed
        for node in lin["nodes"]:
            root = not lin["parents"][node["node"]]
            assert node["composition"].startswith("root:") == root
            assert node["families"], "every computed node applies at least one random function"


def _ancestors_or_self(parents: list[list[int]], node: int) -> set[int]:
    seen, stack = {node}, [node]
    while stack:
        for p in parents[stack.pop()]:
            if p not in seen:
                seen.add(p)
                stack.append(p)
    return seen


def test_target_has_feature_ancestors_by_default() -> None:
    """Default structural constraints: in-degree >= 1 and >= max(2, 5 %) relevant features."""
    for _, _, _, m in metas(make(), indices=(0, 1, 2)):
        lin = m["lineage"]
        assert lin["parents"][lin["target_node"]], "the target is never a root"
        anc = _ancestors_or_self(lin["parents"], lin["target_node"])
        relevant = [j for j, v in enumerate(lin["feature_nodes"]) if v in anc]
        assert relevant == lin["relevant_features"]
        # Constant columns may be dropped after the check, which counts requested features.
        assert len(relevant) >= 1


def test_tabicl_preset_lets_the_target_be_any_node() -> None:
    roots = 0
    for _, _, _, m in metas(make("tabicl"), indices=range(4)):
        lin = m["lineage"]
        roots += not lin["parents"][lin["target_node"]]
        assert m["rejections"].get("target_root", 0) == 0
    assert roots > 0, "without the structural filter some targets are roots (as in TabICL)"


# ------------------------------------------------------------------ filters and rejections


def test_structural_rejections_are_counted_by_reason() -> None:
    cfg = GraphConfig(filter=FilterSection(min_target_relevant_features=12))
    total: dict[str, int] = {}
    for _, _, _, m in metas(make(cfg, min_features=15), indices=(0,)):
        assert m["valid"]
        assert m["attempts"] == 1 + sum(m["rejections"].values())
        for k, v in m["rejections"].items():
            total[k] = total.get(k, 0) + v
        lin = m["lineage"]
        anc = _ancestors_or_self(lin["parents"], lin["target_node"])
        assert sum(v in anc for v in lin["feature_nodes"]) >= 1
    assert set(total) <= {
        "target_root",
        "no_feature_target_path",
        "insufficient_target_relevant_feature_count",
        "insufficient_target_relevant_feature_fraction",
        "nonfinite_output",
        "all_constant_features",
        "invalid_class_split",
    }
    assert total.get("insufficient_target_relevant_feature_count", 0) > 0


def test_impossible_filter_emits_invalid_datasets_not_silently() -> None:
    cfg = GraphConfig(filter=FilterSection(min_target_indegree=1000, max_attempts=3))
    X, y, d, _, _, meta = make(cfg, batch_size=4).get_batch_numpy(0, return_meta=True)
    for b, m in enumerate(meta):
        assert not m["valid"]
        assert m["rejections"] == {"target_root": 3} and m["attempts"] == 3
        assert d[b] == 0 and (X[b] == 0).all() and (y[b] == -100).all()


def test_learnability_filter_rejects_unpredictable_datasets() -> None:
    cfg = GraphConfig.tabicl().with_overrides(["filter.learnability=true"])
    rejected = 0
    for _, _, _, m in metas(make(cfg), indices=(0,)):
        learn = m["lineage"]["learnability"]
        assert m["valid"] and learn is not None and learn["pvalue"] < 0.05
        rejected += m["rejections"].get("unpredictable", 0)
    assert rejected > 0, "TabICL's structure without the filter gives some unlearnable targets"


def test_learnability_function_separates_signal_from_noise() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 6)).astype(np.float32)
    y_signal = (X[:, 0] + 0.5 * X[:, 1] ** 2 > 0.5).astype(np.float32)
    y_noise = rng.integers(0, 3, size=600).astype(np.float32)
    good = _core.learnability(X, y_signal, True, seed=1)
    bad = _core.learnability(X, y_noise, True, seed=1)
    assert good["pvalue"] < 0.01 and good["score"] > 0.3
    assert bad["pvalue"] > 0.05 and bad["score"] < 0.05
    with pytest.raises(ValueError, match="labels must be non-negative integers"):
        _core.learnability(X, y_signal - 0.5, True)
    with pytest.raises(ValueError, match="y has 599 rows but x has 600"):
        _core.learnability(X, y_signal[:-1], False)


# ------------------------------------------------------------------ mechanisms, noise, shift


def _families(m) -> list[str]:
    return [f for node in m["lineage"]["nodes"] for f in node["families"]]


def test_family_weights_restrict_the_mechanisms() -> None:
    weights = {f: 0.0 for f in ("mlp", "tree", "discretization", "quadratic", "gp", "em", "product")}
    cfg = GraphConfig.from_dict({"mechanism": {"function_families": {**weights, "linear": 1.0}}})
    for _, _, _, m in metas(make(cfg), indices=(0,)):
        assert set(_families(m)) == {"linear"}


def test_noise_family_is_recorded_and_mixture_varies() -> None:
    for fam in ("gaussian", "laplace", "student_t"):
        cfg = GraphConfig.from_dict({"noise": {"family": fam}})
        assert {m["lineage"]["noise_family"] for *_, m in metas(make(cfg), indices=(0,))} == {fam}
    mix = GraphConfig.from_dict({"noise": {"family": "mixture"}})
    assert len({m["lineage"]["noise_family"] for *_, m in metas(make(mix), indices=(0,))}) >= 2


def test_graph_drift_makes_graphs_denser() -> None:
    def density(cfg) -> float:
        ms = [m["lineage"] for *_, m in metas(make(cfg, batch_size=48), indices=(0,))]
        return np.mean([lin["n_edges"] / max(1, lin["n_nodes"] * (lin["n_nodes"] - 1) / 2) for lin in ms])

    base = GraphConfig.tabicl()
    dense = base.with_overrides(["shift.mode=custom", "shift.graph_scale=4"])
    assert density(dense) > density(base) + 0.1
    m = metas(make(dense), indices=(0,))[0][3]["lineage"]["shift"]
    assert m["mode"] == "custom" and m["edge_odds_multiplier"] == pytest.approx(16.0)


def test_mechanism_drift_shifts_mass_away_from_linear_families() -> None:
    base = GraphConfig.tabicl()
    tilted = base.with_overrides(["shift.mode=custom", "shift.mechanism_scale=4"])

    def linear_share(cfg) -> float:
        fams = [f for *_, m in metas(make(cfg, batch_size=48), indices=(0,)) for f in _families(m)]
        return fams.count("linear") / len(fams)

    assert linear_share(tilted) < linear_share(base) - 0.03
    shift = metas(make(GraphConfig.from_dict({"shift": {"mode": "mixed"}})), indices=(0,))[0][3]["lineage"][
        "shift"
    ]
    assert shift["graph_scale"] == pytest.approx(1 / 3) and shift["variance_scale"] == pytest.approx(1 / 3)
    assert shift["noise_variance_multiplier"] == pytest.approx(2 ** (1 / 3))


def test_regression_targets_are_standardised() -> None:
    for _, y, _, m in metas(make(regression=True, max_classes=0), indices=(0,)):
        assert m["num_classes"] is None and m["valid"]
        y = y.astype(np.float64)
        assert abs(y.mean()) < 0.2 and 0.5 < y.std() < 1.5


# ------------------------------------------------------------------ missingness


@pytest.mark.parametrize("mechanism", ["mcar", "mar", "mnar"])
@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_missingness_rate_is_met(mechanism: str, rate: float) -> None:
    cfg = GraphConfig(missingness=MissingnessSection(mechanism=mechanism, rate=rate))
    realised = []
    for X, y, _, m in metas(make(cfg, min_features=4), indices=(0,)):
        miss = m["lineage"]["missingness"]
        assert miss["requested_rate"] == rate
        assert np.isnan(X).mean() == pytest.approx(miss["realised_rate"], abs=1e-9)
        assert not np.isnan(y).any(), "the target is never masked"
        realised.append(np.isnan(X).mean())
        if mechanism == "mar":
            for c in miss["always_observed"]:
                assert not np.isnan(X[:, c]).any()
    assert np.mean(realised) == pytest.approx(rate, abs=0.03)


def _mask_and_full(mechanism: str, scale: float) -> list[tuple]:
    """The same datasets with and without missingness: masking is the last step, so the
    unmasked cells are identical and the masked cells' true values are known."""
    key = "mnar_logit_scale" if mechanism == "mnar" else "mar_logit_scale"
    masked = GraphConfig.from_dict({"missingness": {"mechanism": mechanism, "rate": 0.3, key: scale}})
    full = metas(make(min_features=6, max_features=12), indices=(0,))
    part = metas(make(masked, min_features=6, max_features=12), indices=(0,))
    out = []
    for (xf, *_), (xm, *_, m) in zip(full, part, strict=True):
        mask = np.isnan(xm)
        np.testing.assert_array_equal(xm[~mask], xf[~mask])
        out.append((xf, mask, m))
    return out


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def test_mnar_depends_on_the_masked_value() -> None:
    own = []
    for xf, mask, _ in _mask_and_full("mnar", 4.0):
        for c in range(xf.shape[1]):
            if 0 < mask[:, c].mean() < 1:
                own.append(abs(_corr(mask[:, c].astype(float), xf[:, c])))
    assert np.mean(own) > 0.25


def test_mar_depends_on_observed_columns_only() -> None:
    explained = []
    for xf, mask, m in _mask_and_full("mar", 4.0):
        obs = m["lineage"]["missingness"]["always_observed"]
        assert obs and not mask[:, obs].any()
        Z = np.column_stack([xf[:, obs], np.ones(len(xf))])
        for c in range(xf.shape[1]):
            if c in obs or not 0 < mask[:, c].mean() < 1:
                continue
            target = mask[:, c].astype(float)
            coef, *_ = np.linalg.lstsq(Z, target, rcond=None)
            explained.append(abs(_corr(Z @ coef, target)))
    assert np.mean(explained) > 0.3, "the mask is predictable from the always-observed columns"


# ------------------------------------------------------------------ configuration


BAD_CONFIGS = [
    (
        {"graph": {"n_nodes_min": 0}},
        ValueError,
        "graph_config.graph.n_nodes_min=0 is invalid: must be in [1, 1024]",
    ),
    (
        {"graph": {"n_nodes_min": 5, "n_nodes_max": 3}},
        ValueError,
        "graph_config.graph.n_nodes_max=3 is invalid",
    ),
    ({"graph": {"edge_logit_offset": "dense"}}, TypeError, "graph_config.graph.edge_logit_offset='dense'"),
    ({"graph": {"nodes": 3}}, ValueError, "graph_config.graph.nodes is unknown"),
    ({"graphs": {}}, ValueError, "graph_config section 'graphs' is unknown"),
    (
        {"noise": {"family": "cauchy"}},
        ValueError,
        "graph_config.noise.family='cauchy' is invalid: allowed values",
    ),
    ({"noise": {"student_t_df": 2}}, ValueError, "graph_config.noise.student_t_df=2 is invalid: must be > 2"),
    (
        {"noise": {"mixture_weights": [1, 1]}},
        ValueError,
        "graph_config.noise.mixture_weights=[1, 1] is invalid",
    ),
    ({"missingness": {"rate": 0.2}}, ValueError, "rate=0.2 is invalid with mechanism='none'"),
    ({"missingness": {"mechanism": "mar", "rate": 0.99}}, ValueError, "graph_config.missingness.rate=0.99"),
    ({"missingness": {"mechanism": "mnar"}}, ValueError, "rate=0 is invalid with mechanism='mnar'"),
    ({"missingness": {"mechanism": "mask"}}, ValueError, "graph_config.missingness.mechanism='mask'"),
    ({"shift": {"mode": "sideways"}}, ValueError, "graph_config.shift.mode='sideways' is invalid"),
    ({"shift": {"graph_scale": 0.4}}, ValueError, "graph_scale=0.4 is invalid with shift.mode='off'"),
    ({"shift": {"mode": "custom", "variance_scale": 11}}, ValueError, "variance_scale=11 is invalid"),
    ({"mechanism": {"function_families": {"transformer": 1.0}}}, ValueError, "unknown family 'transformer'"),
    (
        {"mechanism": {"aggregations": ["mean"]}},
        ValueError,
        "graph_config.mechanism.aggregations contains 'mean'",
    ),
    ({"mechanism": {"aggregations": []}}, ValueError, "graph_config.mechanism.aggregations=[] is invalid"),
    ({"mechanism": {"categorical_modes": "softmax_id"}}, TypeError, "expected a list"),
    ({"mechanism": {"correlated_choices": "yes"}}, TypeError, "correlated_choices='yes'"),
    ({"filter": {"max_attempts": 0}}, ValueError, "graph_config.filter.max_attempts=0 is invalid"),
    ({"filter": {"min_target_relevant_fraction": 1.5}}, ValueError, "min_target_relevant_fraction=1.5"),
    (
        {"dataset": {"categorical_ratio_min": 0.8, "categorical_ratio_max": 0.2}},
        ValueError,
        "categorical_ratio_max=0.2",
    ),
    ({"dataset": {"max_categorical_cardinality": 1}}, ValueError, "max_categorical_cardinality=1 is invalid"),
    (["graph"], TypeError, "graph_config=['graph'] is invalid"),
]


@pytest.mark.parametrize(("config", "exc", "message"), BAD_CONFIGS)
def test_bad_configurations_raise_clear_errors(config, exc, message) -> None:
    with pytest.raises(exc) as info:
        make(config)
    assert message in str(info.value)


def test_partial_family_weights_keep_the_others() -> None:
    assert (
        GraphConfig.from_dict({"mechanism": {"function_families": {"mlp": 0}}}).mechanism.function_families[
            "gp"
        ]
        == 1
    )
    cfg = GraphConfig.from_dict({"mechanism": {"function_families": {"mlp": 0.0, "gp": 2.0}}})
    assert cfg.mechanism.function_families["mlp"] == 0.0 and cfg.mechanism.function_families["tree"] == 1.0
    for *_, m in metas(make(cfg, batch_size=8), indices=(0,)):
        assert "mlp" not in _families(m)


def test_all_zero_family_weights_are_rejected() -> None:
    zeros = dict.fromkeys(
        ["mlp", "tree", "discretization", "linear", "quadratic", "gp", "em", "product"], 0.0
    )
    with pytest.raises(ValueError, match=r"function_families=.* is invalid: at least one weight > 0"):
        GraphConfig.from_dict({"mechanism": {"function_families": zeros}})


def test_graph_config_needs_graph_prior_and_existing_files(tmp_path) -> None:
    with pytest.raises(ValueError, match="graph_config is only used with prior_type='graph_scm'"):
        PriorDataset(prior_type="mlp_scm", graph_config={"graph": {"n_nodes_max": 4}})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make(str(tmp_path / "missing.yaml"))


def test_core_validates_the_graph_sections_itself() -> None:
    cfg = make().config
    cfg["graph"]["graph"]["n_nodes_min"] = 0
    with pytest.raises(ValueError, match="n_nodes_min=0, n_nodes_max=32 are invalid"):
        _core.PriorEngine(to_json(cfg))
    cfg = make().config
    cfg["graph"]["noise"]["family"] = "cauchy"
    with pytest.raises(ValueError, match=r"graph_config\.noise\.family contains \"cauchy\""):
        _core.PriorEngine(json.dumps(cfg))


def test_yaml_round_trip_and_overrides(tmp_path) -> None:
    import yaml

    cfg = GraphConfig.from_dict(
        {"graph": {"n_nodes_max": 8}, "missingness": {"mechanism": "mcar", "rate": 0.1}}
    )
    path = tmp_path / "prior.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert GraphConfig.from_yaml(path) == cfg
    over = cfg.with_overrides(["graph.n_nodes_max=12", "shift.mode=mixed", "noise.family=laplace"])
    assert over.graph.n_nodes_max == 12 and over.noise.family == "laplace"
    assert over.shift.graph_scale == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match=r"override 'graph\.n_nodes_max' is invalid"):
        cfg.with_overrides(["graph.n_nodes_max"])
    with pytest.raises(ValueError, match=r"graph_config\.graph\.n_nodes_max=1 is invalid"):
        cfg.with_overrides(["graph.n_nodes_max=1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("noise:\n  family: pink\n")
    with pytest.raises(ValueError, match=r"bad.yaml: graph_config.noise.family='pink'"):
        GraphConfig.from_yaml(bad)


def test_node_count_follows_the_configured_range() -> None:
    cfg = GraphConfig.from_dict({"graph": {"n_nodes_min": 3, "n_nodes_max": 5}})
    counts = {m["lineage"]["n_nodes"] for *_, m in metas(make(cfg), indices=(0, 1))}
    assert counts <= {3, 4, 5} and len(counts) >= 2
