"""TabFMClassifier: preprocessing, ensembling, errors, and that a pretrained model predicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from tabfm import TabFMClassifier
from tabfm.classifier import load_model


def blobs(n=200, h=4, classes=2, seed=0, sep=3.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centres = rng.normal(size=(classes, h)) * sep
    return centres[y] + rng.normal(size=(n, h)), y


def test_bundled_model_predicts_separable_classes():
    X, y = blobs(n=300, classes=3)
    clf = TabFMClassifier(n_estimators=4).fit(X[:150], y[:150])  # the bundled icl-tiny model
    proba = clf.predict_proba(X[150:])
    assert proba.shape == (150, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert clf.score(X[150:], y[150:]) > 0.8  # chance is 1/3


def test_labels_of_any_type_are_returned(tiny_checkpoint):
    X, y = blobs()
    names = np.array(["no", "yes"])[y]
    clf = TabFMClassifier(tiny_checkpoint, n_estimators=2).fit(X[:100], names[:100])
    assert list(clf.classes_) == ["no", "yes"]
    assert set(clf.predict(X[100:])) <= {"no", "yes"}


def test_ensemble_undoes_its_class_permutations(tiny_checkpoint):
    # one feature: every member has the same column order, so only the class shifts differ
    X, y = blobs(classes=3, seed=2, h=1)
    model = load_model(tiny_checkpoint)
    one = TabFMClassifier(model=model, n_estimators=1).fit(X[:100], y[:100]).predict_proba(X[100:])
    # relabelling the training classes must relabel the probabilities, nothing else
    perm = np.array([2, 0, 1])
    other = TabFMClassifier(model=model, n_estimators=1).fit(X[:100], perm[y[:100]]).predict_proba(X[100:])
    assert not np.allclose(other, one)
    ens = TabFMClassifier(model=model, n_estimators=3)
    a = ens.fit(X[:100], y[:100]).predict_proba(X[100:])
    b = ens.fit(X[:100], perm[y[:100]]).predict_proba(X[100:])[:, perm]
    np.testing.assert_allclose(a, b, atol=1e-5)  # 3 shifts cover every cyclic labelling


def test_test_chunks_and_context_limit(tiny_checkpoint):
    X, y = blobs(n=300)
    model = load_model(tiny_checkpoint)
    big = TabFMClassifier(model=model, n_estimators=2, test_chunk=1000).fit(X[:200], y[:200])
    small = TabFMClassifier(model=model, n_estimators=2, test_chunk=7).fit(X[:200], y[:200])
    np.testing.assert_allclose(big.predict_proba(X[200:]), small.predict_proba(X[200:]), atol=1e-5)
    sub = TabFMClassifier(model=model, n_estimators=2, max_context=50).fit(X[:200], y[:200])
    assert sub.predict_proba(X[200:]).shape == (100, 2)


def test_categorical_and_missing_values():
    rng = np.random.default_rng(0)
    n = 200
    colour = rng.choice(["red", "green", "blue"], n)
    y = (colour == "red").astype(int)
    df = pd.DataFrame(
        {
            "colour": pd.Categorical(colour),
            "size": rng.normal(size=n),
            "noisy": np.where(rng.random(n) < 0.3, np.nan, rng.normal(size=n)),
            "shape": rng.choice(["a", "b", None], n).astype(object),
        }
    )
    clf = TabFMClassifier(n_estimators=2).fit(df[:150], y[:150])
    assert clf.preprocessor_.categorical == [True, False, False, True]
    test = df[150:].copy()
    test.loc[test.index[0], "colour"] = np.nan  # a missing category at predict time
    assert clf.predict_proba(test).shape == (50, 2)
    assert clf.score(df[150:], y[150:]) > 0.7
    unseen = df[150:].copy()
    unseen["shape"] = "zzz"  # a level never seen in training is treated as missing
    assert np.isfinite(clf.predict_proba(unseen)).all()


def test_wide_tables_use_feature_subsets(tiny_checkpoint):
    X, y = blobs(n=120, h=40)
    clf = TabFMClassifier(tiny_checkpoint, n_estimators=2).fit(X[:60], y[:60])
    assert load_model(tiny_checkpoint).trained_max_features == 20
    assert load_model("icl-tiny").trained_max_features == 20
    assert clf.predict_proba(X[60:]).shape == (60, 2)


@pytest.mark.parametrize(
    ("X", "y", "message"),
    [
        (np.zeros((0, 3)), np.zeros(0), "empty"),
        (np.random.default_rng(0).normal(size=(10, 2)), np.ones(10), "single class"),
        (
            np.random.default_rng(0).normal(size=(24, 2)),
            np.arange(24) % 12,
            "12 classes: this model supports at most 10",
        ),
        (
            np.column_stack([np.ones(6), np.full(6, np.nan)]),
            np.arange(6) % 2,
            r"\['x1'\] with no observed value",
        ),
        (np.ones((6, 2)), np.arange(5) % 2, "X has 6 rows but y has 5"),
        (np.ones((6, 0)), np.arange(6) % 2, "no feature columns"),
        (np.ones(6), np.arange(6) % 2, "expected a 2-D array"),
    ],
)
def test_bad_data(tiny_checkpoint, X, y, message):
    with pytest.raises(ValueError, match=message):
        TabFMClassifier(tiny_checkpoint).fit(X, y)


def test_bad_parameters_and_use(tiny_checkpoint, tmp_path):
    X, y = blobs()
    with pytest.raises(ValueError, match="n_estimators=0"):
        TabFMClassifier(tiny_checkpoint, n_estimators=0).fit(X, y)
    with pytest.raises(ValueError, match="checkpoint=None"):
        TabFMClassifier(checkpoint=None).fit(X, y)
    with pytest.raises(ValueError, match="holds no checkpoint"):
        TabFMClassifier(tmp_path).fit(X, y)
    with pytest.raises(ValueError, match="device='tpu'"):
        TabFMClassifier(tiny_checkpoint, device="tpu").fit(X, y)
    with pytest.raises(RuntimeError, match="not fitted"):
        TabFMClassifier(tiny_checkpoint).predict(X)
    clf = TabFMClassifier(tiny_checkpoint, n_estimators=1).fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features, but the classifier was fitted with 4"):
        clf.predict(X[:, :3])


def test_sklearn_clone_and_cross_val():
    from sklearn.base import clone
    from sklearn.model_selection import cross_val_score

    X, y = blobs(n=120)
    clf = TabFMClassifier(n_estimators=1)
    assert clone(clf).get_params()["n_estimators"] == 1
    scores = cross_val_score(clf, X, y, cv=2, scoring="accuracy")
    assert scores.shape == (2,) and (scores > 0.6).all()
