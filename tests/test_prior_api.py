"""Public API of ``tabfm.prior.PriorDataset``: argument validation, batch layout, labels,
metadata, zero-copy hand-over to torch, panics, and hyper-parameter overrides."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
import tabfm.prior._dataset as dataset_module
import torch
from tabfm import _core
from tabfm.prior import PriorDataset

# Small, fast configuration every test starts from.
SMALL = dict(batch_size=8, batch_size_per_gp=2, max_features=12, max_seq_len=96, n_jobs=1, seed=0)
SCM_PRIORS = ["mlp_scm", "tree_scm", "mix_scm"]
ALL_PRIORS = [*SCM_PRIORS, "dummy"]
META_KEYS = {
    "prior_type",
    "group",
    "num_features",
    "d",
    "num_classes",
    "realised_classes",
    "categorical_columns",
    "attempts",
    "valid",
    "hp",
    "layers",
}


def make(**overrides) -> PriorDataset:
    return PriorDataset(**{**SMALL, **overrides})


def _mentions(*tokens: str) -> str:
    """A regex that requires every token in the message, as a standalone token, in any order."""
    looks = "".join(rf"(?=.*(?<![\w.]){re.escape(t)}(?![\w.]))" for t in tokens)
    return rf"(?s){looks}"


# ------------------------------------------------------------------ bad configurations

BAD_CONFIGS = [
    # (id, arguments, exception type, tokens the message must contain: argument and value)
    ("prior_type", dict(prior_type="gaussian"), ValueError, ["prior_type", "gaussian"]),
    ("batch_size_zero", dict(batch_size=0), ValueError, ["batch_size", "0"]),
    ("batch_size_str", dict(batch_size="8"), TypeError, ["batch_size", "8"]),
    ("batch_size_bool", dict(batch_size=True), TypeError, ["batch_size", "True"]),
    ("batch_size_per_gp_zero", dict(batch_size_per_gp=0), ValueError, ["batch_size_per_gp", "0"]),
    ("batch_size_per_subgp_zero", dict(batch_size_per_subgp=0), ValueError, ["batch_size_per_subgp", "0"]),
    (
        "min_gt_max_features",
        dict(min_features=13, max_features=12),
        ValueError,
        ["min_features", "13", "max_features", "12"],
    ),
    ("max_features_zero", dict(max_features=0), ValueError, ["max_features", "0"]),
    ("min_features_zero", dict(min_features=0), ValueError, ["min_features", "0"]),
    ("max_classes_one", dict(max_classes=1), ValueError, ["max_classes", "1"]),
    ("max_classes_float", dict(max_classes=2.5), TypeError, ["max_classes", "2.5"]),
    ("min_seq_len_eq_max", dict(min_seq_len=96), ValueError, ["min_seq_len", "96", "max_seq_len"]),
    ("min_seq_len_gt_max", dict(min_seq_len=200), ValueError, ["min_seq_len", "200"]),
    ("max_seq_len_one", dict(max_seq_len=1), ValueError, ["max_seq_len", "1"]),
    (
        "train_size_mixed_types",
        dict(min_train_size=10, max_train_size=0.5),
        ValueError,
        ["min_train_size", "10", "max_train_size", "0.5"],
    ),
    (
        "train_size_float_ge_one",
        dict(min_train_size=0.1, max_train_size=1.0),
        ValueError,
        ["max_train_size", "1.0"],
    ),
    (
        "train_size_float_min_gt_max",
        dict(min_train_size=0.6, max_train_size=0.3),
        ValueError,
        ["min_train_size", "0.6", "max_train_size", "0.3"],
    ),
    (
        "train_size_int_ge_seq_len",
        dict(min_train_size=10, max_train_size=200),
        ValueError,
        ["max_train_size", "200", "96"],
    ),
    (
        "train_size_int_ge_min_seq_len",
        dict(min_seq_len=32, min_train_size=5, max_train_size=40),
        ValueError,
        ["max_train_size", "40", "32"],
    ),
    ("n_jobs_zero", dict(n_jobs=0), ValueError, ["n_jobs", "0"]),
    ("n_jobs_minus_two", dict(n_jobs=-2), ValueError, ["n_jobs", "-2"]),
    ("n_jobs_float", dict(n_jobs=1.5), TypeError, ["n_jobs", "1.5"]),
    ("regression_str", dict(regression="yes"), TypeError, ["regression", "yes"]),
    ("log_seq_len_str", dict(log_seq_len="no"), TypeError, ["log_seq_len", "no"]),
    ("seed_negative", dict(seed=-1), ValueError, ["seed", "-1"]),
    ("seed_too_large", dict(seed=2**64), ValueError, ["seed", str(2**64)]),
    ("num_batches_zero", dict(num_batches=0), ValueError, ["num_batches", "0"]),
    (
        "fixed_hp_unknown_key",
        dict(scm_fixed_hp={"num_layerz": 3}),
        ValueError,
        ["scm_fixed_hp", "num_layerz"],
    ),
    ("fixed_hp_not_a_dict", dict(scm_fixed_hp=[("num_layers", 3)]), TypeError, ["scm_fixed_hp"]),
    (
        "tree_model_random_forest",
        dict(scm_fixed_hp={"tree_model": "random_forest"}),
        ValueError,
        ["scm_fixed_hp", "tree_model", "random_forest"],
    ),
    (
        "mix_probs_sum",
        dict(prior_type="mix_scm", scm_fixed_hp={"mix_probs": (0.5, 0.7)}),
        ValueError,
        ["mix_probs", "0.5", "0.7"],
    ),
    (
        "mix_probs_negative",
        dict(prior_type="mix_scm", scm_fixed_hp={"mix_probs": (-0.5, 1.5)}),
        ValueError,
        ["mix_probs", "-0.5", "1.5"],
    ),
    (
        "mix_probs_length",
        dict(prior_type="mix_scm", scm_fixed_hp={"mix_probs": (1.0,)}),
        ValueError,
        ["mix_probs", "1.0"],
    ),
    (
        "fixed_hp_cat_prob",
        dict(scm_fixed_hp={"cat_prob": 1.5}),
        ValueError,
        ["scm_fixed_hp", "cat_prob", "1.5"],
    ),
    (
        "fixed_hp_sampled_key_bad_value",
        dict(scm_fixed_hp={"num_layers": 1}, scm_sampled_hp={"num_layers": None}),
        ValueError,
        ["scm_fixed_hp", "num_layers", "1"],
    ),
    (
        "sampled_hp_unknown_key",
        dict(scm_sampled_hp={"num_layerz": {"distribution": "meta_choice", "choice_values": [3]}}),
        ValueError,
        ["scm_sampled_hp", "num_layerz"],
    ),
    (
        "sampled_hp_unknown_distribution",
        dict(scm_sampled_hp={"hidden_dim": {"distribution": "meta_lognormal", "min": 1, "max": 9}}),
        ValueError,
        ["hidden_dim", "meta_lognormal"],
    ),
    (
        "sampled_hp_unknown_spec_field",
        dict(
            scm_sampled_hp={
                "num_layers": {"distribution": "meta_choice", "choice_values": [3], "weights": [1]}
            }
        ),
        ValueError,
        ["num_layers", "weights"],
    ),
    (
        "sampled_hp_not_a_spec",
        dict(scm_sampled_hp={"num_layers": 3}),
        ValueError,
        ["scm_sampled_hp", "num_layers", "3"],
    ),
    (
        "meta_beta_min_gt_max",
        dict(
            scm_sampled_hp={
                "mlp_dropout_prob": {"distribution": "meta_beta", "scale": 0.9, "min": 5.0, "max": 0.1}
            }
        ),
        ValueError,
        ["mlp_dropout_prob", "meta_beta", "5", "0.1"],
    ),
    (
        "num_layers_lower_bound_one",
        dict(
            scm_sampled_hp={
                "num_layers": {
                    "distribution": "meta_trunc_norm_log_scaled",
                    "max_mean": 6,
                    "min_mean": 1,
                    "round": True,
                    "lower_bound": 1,
                }
            }
        ),
        ValueError,
        ["num_layers", "lower_bound", "1"],
    ),
    (
        "empty_choice_values",
        dict(scm_sampled_hp={"num_layers": {"distribution": "meta_choice", "choice_values": []}}),
        ValueError,
        ["num_layers", "choice_values"],
    ),
    (
        "sampling_bad_choice",
        dict(
            scm_sampled_hp={
                "sampling": {"distribution": "meta_choice", "choice_values": ["normal", "gaussian"]}
            }
        ),
        ValueError,
        ["sampling", "gaussian"],
    ),
    (
        "activation_unknown",
        dict(
            scm_sampled_hp={
                "mlp_activations": {"distribution": "meta_choice_mixed", "choice_values": ["tanh", "swish"]}
            }
        ),
        ValueError,
        ["mlp_activations", "swish"],
    ),
    (
        "activation_not_a_name",
        dict(
            scm_sampled_hp={
                "mlp_activations": {"distribution": "meta_choice_mixed", "choice_values": ["tanh", 7]}
            }
        ),
        ValueError,
        ["mlp_activations", "7"],
    ),
    ("device_nonsense", dict(device="nonsense"), ValueError, ["device", "nonsense"]),
    ("rank_ge_world_size", dict(rank=2, world_size=2), ValueError, ["rank", "2", "world_size"]),
    ("world_size_zero", dict(world_size=0), ValueError, ["world_size", "0"]),
    ("rank_negative", dict(rank=-1), ValueError, ["rank", "-1"]),
]


def test_bad_config_table_is_large_enough() -> None:
    assert len(BAD_CONFIGS) >= 20
    assert len({case[0] for case in BAD_CONFIGS}) == len(BAD_CONFIGS)


@pytest.mark.parametrize(("kwargs", "exc", "tokens"), [pytest.param(*c[1:], id=c[0]) for c in BAD_CONFIGS])
def test_bad_config_raises_naming_argument_and_value(kwargs, exc, tokens) -> None:
    # Raised by the constructor itself: no dataset object exists to draw a batch from.
    with pytest.raises(exc, match=_mentions(*tokens)):
        make(**kwargs)


def test_bad_configs_fail_before_any_generation(monkeypatch) -> None:
    """Every bad configuration fails in the constructor, before the engine generates anything."""
    calls: list[tuple] = []

    class SpyEngine:
        def __init__(self, config_json: str):
            self._real = _core.PriorEngine(config_json)

        @property
        def config_json(self) -> str:
            return self._real.config_json

        def generate(self, *args, **kwargs):
            calls.append(args)
            return self._real.generate(*args, **kwargs)

    monkeypatch.setattr(dataset_module, "_core", SimpleNamespace(PriorEngine=SpyEngine))
    for name, kwargs, exc, _ in BAD_CONFIGS:
        with pytest.raises(exc):
            make(**kwargs)
        assert calls == [], f"{name}: generation ran before the configuration error"
    # The spy does see generation when there is some (so the check above can fail).
    make().get_batch(0)
    assert len(calls) == 1


def test_valid_boundary_configs_are_accepted() -> None:
    # The edges just inside the allowed ranges construct and generate.
    for kwargs in (
        dict(min_features=12, max_features=12),
        dict(max_seq_len=2, min_train_size=0.5, max_train_size=0.5, prior_type="dummy"),
        dict(min_seq_len=95),
        dict(min_train_size=1, max_train_size=96),  # train sizes in [1, 96): at most 95 < 96
        dict(max_classes=2),
        dict(regression=True, max_classes=1),  # regression ignores max_classes, as TabICL
        dict(seed=2**64 - 1),
        dict(rank=1, world_size=2),
    ):
        ds = make(**kwargs)
        X, _, _, seq_lens, train_sizes = ds.get_batch(0)
        assert X.shape[0] == SMALL["batch_size"]
        assert torch.all(train_sizes < seq_lens)


# ------------------------------------------------------------------ layout of a batch


@pytest.mark.parametrize("prior_type", ALL_PRIORS)
def test_shapes_dtypes_and_zero_padding(prior_type: str) -> None:
    ds = make(prior_type=prior_type, batch_size=12, batch_size_per_gp=4, max_features=15, max_seq_len=80)
    for index in range(3):
        X, y, d, seq_lens, train_sizes = ds.get_batch(index)
        assert all(isinstance(t, torch.Tensor) for t in (X, y, d, seq_lens, train_sizes))
        assert X.dtype == torch.float32 and y.dtype == torch.float32
        assert d.dtype == seq_lens.dtype == train_sizes.dtype == torch.int64
        assert X.shape == (12, 80, 15)
        assert y.shape == (12, 80)
        assert d.shape == seq_lens.shape == train_sizes.shape == (12,)
        assert X.device.type == "cpu" and X.is_contiguous() and y.is_contiguous()
        assert torch.all(seq_lens == 80)
        assert torch.all((d >= 1) & (d <= 15))
        assert torch.all(torch.isfinite(X)) and torch.all(torch.isfinite(y))
        # Fractions 0.1 .. 0.9 of seq_len.
        assert torch.all(train_sizes >= 8) and torch.all(train_sizes < 72)
        for i in range(12):
            di = int(d[i])
            assert torch.all(X[i, :, di:] == 0), f"batch {index}, dataset {i}: columns beyond d={di} not zero"
            active = X[i, :, :di]
            # Every active column carries information (constant columns are dropped).
            assert torch.all(active.max(dim=0).values > active.min(dim=0).values)


def test_seq_len_sampling_within_bounds() -> None:
    ds = make(min_seq_len=40, max_seq_len=96)
    lengths = set()
    for index in range(6):
        X, _, _, seq_lens, train_sizes = ds.get_batch(index)
        # One length per batch without seq_len_per_gp.
        assert torch.all(seq_lens == seq_lens[0])
        assert X.shape[1] == int(seq_lens[0])
        assert 40 <= int(seq_lens[0]) < 96
        assert torch.all(train_sizes < seq_lens)
        lengths.add(int(seq_lens[0]))
    assert len(lengths) > 1, "seq_len is not sampled per batch"


def test_integer_train_sizes_are_row_counts() -> None:
    ds = make(min_train_size=10, max_train_size=30)
    seen = set()
    for index in range(8):
        _, _, _, _, train_sizes = ds.get_batch(index)
        assert torch.all((train_sizes >= 10) & (train_sizes < 30))
        seen.update(train_sizes.tolist())
    assert len(seen) > 1


@pytest.mark.parametrize("prior_type", SCM_PRIORS)
def test_classification_labels_dense_and_shared_by_train_and_test(prior_type: str) -> None:
    ds = make(
        prior_type=prior_type,
        batch_size=16,
        batch_size_per_gp=4,
        max_classes=7,
        max_seq_len=128,
        min_seq_len=64,
    )
    class_counts = set()
    for index in range(4):
        _, y, _, seq_lens, train_sizes, meta = ds.get_batch(index, return_meta=True)
        for i in range(y.shape[0]):
            s, t = int(seq_lens[i]), int(train_sizes[i])
            yi = y[i, :s].numpy()
            assert np.array_equal(yi, np.round(yi)), "labels are not integers"
            labels = np.unique(yi).astype(np.int64)
            n = len(labels)
            assert 2 <= n <= 7
            assert np.array_equal(labels, np.arange(n)), f"labels {labels} are not 0..C-1"
            assert set(np.unique(yi[:t])) == set(np.unique(yi[t:])), "train and test label sets differ"
            assert meta[i]["valid"] is True
            assert meta[i]["num_classes"] is not None and n <= meta[i]["num_classes"] <= 7
            class_counts.add(n)
    assert len(class_counts) > 1 and max(class_counts) > 2, "multi-class tasks never drawn"


@pytest.mark.parametrize("prior_type", ["mlp_scm", "tree_scm", "mix_scm"])
def test_regression_targets_are_continuous_and_standardised(prior_type: str) -> None:
    ds = make(prior_type=prior_type, regression=True, max_seq_len=128)
    for index in range(3):
        _, y, _, seq_lens, _, meta = ds.get_batch(index, return_meta=True)
        for i in range(y.shape[0]):
            yi = y[i, : int(seq_lens[i])].double()
            assert not torch.equal(yi, torch.round(yi)), "regression target looks like class labels"
            assert len(torch.unique(yi)) > 10
            assert abs(float(yi.mean())) < 0.05
            assert 0.9 < float(yi.std()) < 1.05
            assert meta[i]["num_classes"] is None
            assert meta[i]["realised_classes"] == 0


def test_dummy_prior_layout() -> None:
    ds = make(prior_type="dummy", batch_size=16, max_features=10, max_classes=9, max_seq_len=128)
    per_batch_classes = []
    for index in range(6):
        X, y, d, seq_lens, _, meta = ds.get_batch(index, return_meta=True)
        assert torch.all(d == 10), "dummy datasets use every column"
        assert torch.all(seq_lens == 128)
        ks = {m["num_classes"] for m in meta}
        assert len(ks) == 1, f"dummy batch {index} mixes class counts {ks}"
        (k,) = ks
        assert 2 <= k <= 9
        assert {m["prior_type"] for m in meta} == {"dummy"}
        assert torch.all(y == torch.round(y)) and torch.all((y >= 0) & (y < k))
        # Standard normal features.
        assert abs(float(X.mean())) < 0.05 and abs(float(X.std()) - 1.0) < 0.05
        per_batch_classes.append(k)
    assert len(set(per_batch_classes)) > 1, "the class count is not drawn per batch"


def test_dummy_metadata_realised_classes_counts_labels() -> None:
    # With 8 rows and up to 10 classes, not every requested class occurs: the metadata must
    # report what the labels actually contain.
    ds = make(prior_type="dummy", batch_size=8, max_features=4, max_seq_len=8, max_classes=10)
    for index in range(3):
        _, y, _, seq_lens, _, meta = ds.get_batch(index, return_meta=True)
        for i, m in enumerate(meta):
            distinct = len(torch.unique(y[i, : int(seq_lens[i])]))
            assert m["realised_classes"] == distinct, (index, i, m["realised_classes"], distinct)


def test_seq_len_per_gp_pads_to_longest_group() -> None:
    ds = make(batch_size=12, batch_size_per_gp=3, seq_len_per_gp=True, min_seq_len=24, max_seq_len=128)
    distinct_lengths = set()
    for index in range(3):
        X, y, d, seq_lens, train_sizes, meta = ds.get_batch(index, return_meta=True)
        T = X.shape[1]
        assert int(seq_lens.max()) == T
        assert y.shape == (12, T)
        groups = [m["group"] for m in meta]
        assert groups == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
        for g in range(4):
            idx = [i for i in range(12) if groups[i] == g]
            assert len({int(seq_lens[i]) for i in idx}) == 1, "seq_len differs within a group"
            assert len({int(train_sizes[i]) for i in idx}) == 1
        for i in range(12):
            s = int(seq_lens[i])
            assert 24 <= s < 128
            assert 0 < int(train_sizes[i]) < s
            assert torch.all(X[i, s:] == 0) and torch.all(y[i, s:] == 0), f"rows beyond seq_len {s} not zero"
            active = X[i, :s, : int(d[i])]
            assert torch.all(active.max(dim=0).values > active.min(dim=0).values)
            # Real rows are present up to seq_len: the last real row is not padding.
            assert torch.any(X[i, s - 1, : int(d[i])] != 0)
        distinct_lengths.update(seq_lens.tolist())
    assert len(distinct_lengths) > 2, "groups do not get their own seq_len"


# ------------------------------------------------------------------ metadata


@pytest.mark.parametrize(
    ("prior_type", "extra"),
    [
        ("mlp_scm", {}),
        ("tree_scm", {}),
        ("mix_scm", {}),
        ("mlp_scm", {"scm_fixed_hp": {"cat_prob": 1.0}}),
        ("tree_scm", {"scm_fixed_hp": {"cat_prob": 1.0}}),
    ],
    ids=["mlp", "tree", "mix", "mlp-categorical", "tree-categorical"],
)
def test_metadata_consistent_with_batch(prior_type: str, extra: dict) -> None:
    ds = make(prior_type=prior_type, batch_size=8, batch_size_per_gp=2, **extra)
    any_categorical = False
    for index in range(3):
        _, y, d, seq_lens, _, meta = ds.get_batch(index, return_meta=True)
        assert isinstance(meta, list) and len(meta) == 8
        for i, m in enumerate(meta):
            assert set(m) == META_KEYS
            assert m["d"] == int(d[i])
            assert m["d"] <= m["num_features"] <= SMALL["max_features"]
            labels = torch.unique(y[i, : int(seq_lens[i])])
            assert m["realised_classes"] == len(labels)
            assert m["num_classes"] >= m["realised_classes"] >= 2
            cats = m["categorical_columns"]
            assert all(isinstance(c, int) and 0 <= c < m["d"] for c in cats)
            assert len(set(cats)) == len(cats)
            any_categorical |= bool(cats)
            assert isinstance(m["attempts"], int) and m["attempts"] >= 1
            assert isinstance(m["valid"], bool)
            # The tree SCM draws its own depth and width: its metadata lists only what it uses.
            hp_keys = (
                {"sampling", "noise_std"} if m["prior_type"] == "tree_scm" else {"num_layers", "hidden_dim"}
            )
            assert isinstance(m["hp"], dict) and hp_keys | {"sampling"} <= set(m["hp"])
            if m["prior_type"] == "tree_scm":
                assert "num_layers" not in m["hp"] and 2 <= len(m["layers"]) <= 3
            assert isinstance(m["layers"], list) and len(m["layers"]) >= 1
            expected_type = prior_type if prior_type != "mix_scm" else m["prior_type"]
            assert m["prior_type"] == expected_type and m["prior_type"] in ("mlp_scm", "tree_scm")
            if m["prior_type"] == "tree_scm":
                assert all(layer.startswith("trees(") for layer in m["layers"])
            else:
                assert not any(layer.startswith("trees(") for layer in m["layers"])
        # Metadata only when asked for.
        assert len(ds.get_batch(index)) == 5
    if extra:
        assert any_categorical, "cat_prob=1.0 produced no categorical column"


def test_mix_scm_uses_both_priors_and_honours_mix_probs() -> None:
    kinds = set()
    ds = make(prior_type="mix_scm", batch_size=16, batch_size_per_gp=4)
    for index in range(4):
        *_, meta = ds.get_batch(index, return_meta=True)
        kinds.update(m["prior_type"] for m in meta)
    assert kinds == {"mlp_scm", "tree_scm"}
    for probs, only in (((1.0, 0.0), "mlp_scm"), ((0.0, 1.0), "tree_scm")):
        ds = make(prior_type="mix_scm", batch_size=16, batch_size_per_gp=4, scm_fixed_hp={"mix_probs": probs})
        for index in range(3):
            *_, meta = ds.get_batch(index, return_meta=True)
            assert {m["prior_type"] for m in meta} == {only}, probs


# ------------------------------------------------------------------ zero copy


def test_get_batch_hands_rust_buffers_to_torch_without_copy() -> None:
    ds = make()
    real = ds._engine
    returned: list[tuple] = []

    class RecordingEngine:
        config_json = real.config_json

        def generate(self, *args, **kwargs):
            out = real.generate(*args, **kwargs)
            returned.append(out)
            return out

    ds._engine = RecordingEngine()
    tensors = ds.get_batch(2)
    assert len(returned) == 1
    arrays = returned[0][:5]
    for t, a in zip(tensors, arrays, strict=True):
        assert isinstance(a, np.ndarray)
        # The numpy array wraps memory it does not own: the Rust allocation, not a numpy copy.
        assert a.flags.owndata is False
        assert a.base is not None and not isinstance(a.base, np.ndarray)
        assert a.flags.c_contiguous
        # The tensor is a view of exactly that memory ...
        assert t.data_ptr() == a.ctypes.data
        # ... and .numpy() gives that memory back.
        back = t.numpy()
        assert back.ctypes.data == a.ctypes.data
        assert back.flags.owndata is False
    # Writes through the tensor are visible in the Rust-owned array: shared, not copied.
    X = tensors[0]
    X[0, 0, 0] = 12345.0
    assert arrays[0][0, 0, 0] == 12345.0
    tensors[1][0, 0] = -7.0
    assert arrays[1][0, 0] == -7.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="direct huge-page mappings are Linux only")
def test_large_batch_buffers_come_from_the_huge_page_allocator_and_are_reused() -> None:
    # 16 x 1024 x 256 float32 cells = 16 MiB, the allocator's threshold for direct mappings:
    # such an X starts at a 2 MiB boundary (the system allocator's blocks follow a 16-byte
    # header, so theirs do not).
    big = PriorDataset(**{**SMALL, "batch_size": 16, "max_features": 256, "max_seq_len": 1024})
    X, _, d, *_ = big.get_batch(0)
    assert X.numel() * 4 >= 16 << 20
    assert X.data_ptr() % (2 << 20) == 0
    # The fresh mapping reads as zero wherever no dataset wrote: the padding past each d.
    for b in range(X.shape[0]):
        assert torch.all(X[b, :, int(d[b]) :] == 0)
    # Freed, the mapping is kept for the next batch of its size, which finds it full of its
    # last owner's values: the padding must read zero all the same, and the batch equal
    # itself drawn into fresh memory.
    ptr = X.data_ptr()
    X.fill_(7.0)
    del X
    X1, _, d1, *_ = big.get_batch(1)
    assert X1.data_ptr() == ptr, "the freed batch buffer was not reused"
    for b in range(X1.shape[0]):
        assert torch.all(X1[b, :, int(d1[b]) :] == 0)
    assert torch.equal(X1, big.get_batch(1)[0])


def test_bindings_refuse_fortran_ordered_arrays() -> None:
    # numpy's contiguity check in the bindings also passes Fortran order, whose values the core
    # would read, or write, in the wrong order: every array argument must be C-ordered.
    x = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(4, 3))
    y = np.zeros((4, 1), dtype=np.float32)
    with pytest.raises(ValueError, match="x must be a C-contiguous array"):
        _core._tree_fit_predict(x, y, 2, 1)
    assert _core._tree_fit_predict(np.ascontiguousarray(x), y, 2, 1).shape == (4, 1)
    with pytest.raises(ValueError, match="x must be a C-contiguous array"):
        _core.learnability(x, np.zeros(4, dtype=np.float32), False)
    out = np.zeros((2, 3, 4), dtype=np.float32, order="F")
    with pytest.raises(ValueError, match="out must be a C-contiguous array"):
        _core.read_shard_lists("unused", [], [], [], [], 0, 0, 0, out)


def test_get_batch_numpy_arrays_are_not_numpy_owned() -> None:
    X, y, d, seq_lens, train_sizes = make().get_batch_numpy(0)
    for a, dtype in (
        (X, np.float32),
        (y, np.float32),
        (d, np.int64),
        (seq_lens, np.int64),
        (train_sizes, np.int64),
    ):
        assert a.dtype == dtype
        assert a.flags.owndata is False and a.base is not None and not isinstance(a.base, np.ndarray)
    assert torch.equal(torch.from_numpy(X), make().get_batch(0)[0])


# ------------------------------------------------------------------ panics


@pytest.mark.parametrize("in_pool", [False, True], ids=["caller-thread", "worker-pool"])
def test_rust_panic_becomes_python_exception(in_pool: bool) -> None:
    ds = make(n_jobs=2)
    before = ds.get_batch(3)
    for _ in range(2):  # the pool must survive more than one panic
        with pytest.raises(BaseException, match="tabfm debug panic") as info:
            _core._debug_panic(in_pool)
        assert type(info.value).__name__ == "PanicException"
        assert not isinstance(info.value, (KeyboardInterrupt, SystemExit))
    # The interpreter and the thread pool still work, and give the same batch.
    after = ds.get_batch(3)
    for a, b in zip(before, after, strict=True):
        assert torch.equal(a, b)


def test_rust_panic_does_not_kill_the_interpreter() -> None:
    # Isolated in a subprocess: an abort would only fail this test, not the test session.
    script = textwrap.dedent(
        """
        from tabfm import _core
        from tabfm.prior import PriorDataset
        caught = []
        for in_pool in (False, True):
            try:
                _core._debug_panic(in_pool)
            except BaseException as e:
                caught.append(type(e).__name__)
        ds = PriorDataset(batch_size=4, max_features=5, max_seq_len=32, n_jobs=2)
        X = ds.get_batch(0)[0]
        print("CAUGHT", caught, "SHAPE", tuple(X.shape))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RUST_BACKTRACE": "0"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "CAUGHT ['PanicException', 'PanicException'] SHAPE (4, 32, 5)" in proc.stdout


# ------------------------------------------------------------------ hyper-parameter overrides


def _hp_values(ds: PriorDataset, key: str, batches: int = 3) -> list[str]:
    out = []
    for index in range(batches):
        *_, meta = ds.get_batch(index, return_meta=True)
        out += [m["hp"][key] for m in meta]
    return out


def test_default_num_layers_vary() -> None:
    # Baseline for the overrides below: without them, num_layers is sampled.
    assert len(set(_hp_values(make(batch_size=16, batch_size_per_gp=2), "num_layers"))) > 1


def test_sampled_hp_override_meta_choice() -> None:
    ds = make(
        batch_size=16,
        batch_size_per_gp=2,
        scm_sampled_hp={"num_layers": {"distribution": "meta_choice", "choice_values": [3]}},
    )
    for index in range(3):
        *_, meta = ds.get_batch(index, return_meta=True)
        for m in meta:
            assert m["hp"]["num_layers"] == "3"
            # The non-causal MLP has one activation block per layer.
            assert len(m["layers"]) == 3


def test_fixed_hp_used_when_sampled_entry_removed() -> None:
    ds = make(
        batch_size=16,
        batch_size_per_gp=2,
        scm_fixed_hp={"num_layers": 5},
        scm_sampled_hp={"num_layers": None},
    )
    for index in range(3):
        *_, meta = ds.get_batch(index, return_meta=True)
        for m in meta:
            assert m["hp"]["num_layers"] == "5"
            assert len(m["layers"]) == 5


def test_sampled_hp_override_other_keys() -> None:
    ds = make(
        batch_size=8,
        scm_sampled_hp={
            "sampling": {"distribution": "meta_choice", "choice_values": ["uniform"]},
            "mlp_activations": {"distribution": "meta_choice", "choice_values": ["sine"]},
            "hidden_dim": {"distribution": "meta_choice", "choice_values": [7]},
        },
    )
    *_, meta = ds.get_batch(0, return_meta=True)
    for m in meta:
        assert m["hp"]["sampling"] == "uniform"
        assert m["hp"]["hidden_dim"] == "7"
        assert set(m["layers"]) == {"sine"}


def test_repr_and_attributes() -> None:
    ds = make(prior_type="tree_scm", min_seq_len=32)
    r = repr(ds)
    assert "tree_scm" in r and "batch_size=8" in r and "32-96" in r
    assert ds.batch_size == 8 and ds.max_features == 12 and ds.prior_type == "tree_scm"
    assert ds.batch_size_per_subgp == 2  # defaults to batch_size_per_gp


@pytest.mark.parametrize("seq_len_per_gp", [False, True])
def test_seq_lens_multiple_of_rounds_lengths(seq_len_per_gp: bool) -> None:
    ds = PriorDataset(
        prior_type="mlp_scm", batch_size=8, batch_size_per_gp=2, max_features=6, min_seq_len=60, max_seq_len=200,
        seq_len_per_gp=seq_len_per_gp, seq_lens_multiple_of=16, n_jobs=1, seed=3,
    )  # fmt: skip
    for i in range(4):
        _, _, _, seq_lens, train_sizes = ds.get_batch_numpy(i)
        assert (seq_lens % 16 == 0).all() and (train_sizes % 16 == 0).all()
        assert ((train_sizes >= 16) & (train_sizes <= seq_lens - 16)).all()
    with pytest.raises(
        ValueError, match="seq_lens_multiple_of=40 is invalid: at most half the shortest seq_len"
    ):
        PriorDataset(min_seq_len=60, max_seq_len=200, seq_lens_multiple_of=40)
    with pytest.raises(ValueError, match="seq_lens_multiple_of=0 is invalid"):
        PriorDataset(seq_lens_multiple_of=0)
