"""tabfm.evaluation: the offline datasets, the shared splits, the metrics, the baselines and the report."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from tabfm.evaluation import (
    DATASET_NAMES,
    RealDataset,
    baseline_models,
    evaluate,
    format_table,
    load_suite,
    plot,
    summarise,
)
from tabfm.evaluation.suite import CategoricalGBDT, score_proba, split_indices

COLUMNS = ["dataset", "model", "split", "accuracy", "roc_auc", "log_loss", "fit_s", "predict_s"]


class Recorder:
    """Records the rows it is fitted and scored on (original row labels) and predicts the class prior,
    a constant score for every row."""

    def __init__(self, log: list):
        self.log = log

    def fit(self, X, y):
        self.log.append(("fit", list(X.index), np.asarray(y).copy()))
        self.classes_ = np.unique(y)
        self.prior_ = np.bincount(y, minlength=len(self.classes_))[self.classes_] / len(y)
        return self

    def predict_proba(self, X):
        self.log.append(("predict", list(X.index), None))
        return np.tile(self.prior_, (len(X), 1))


# --- datasets -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shape", "n_classes"),
    [
        ("iris", (150, 4), 3),
        ("wine", (178, 13), 3),
        ("breast_cancer", (569, 30), 2),
        ("digits", (1797, 64), 10),
        ("diabetes_bin", (442, 10), 2),
    ],
)
def test_sklearn_datasets(name, shape, n_classes):
    (ds,) = load_suite([name])
    assert isinstance(ds, RealDataset)
    assert ds.name == name
    assert isinstance(ds.X, pd.DataFrame)
    assert ds.X.shape == shape
    assert ds.n_classes == n_classes
    assert ds.y.dtype.kind == "i"
    assert sorted(np.unique(ds.y)) == list(range(n_classes))
    assert ds.categorical == []
    assert all(pd.api.types.is_numeric_dtype(t) for t in ds.X.dtypes)


def test_diabetes_is_split_at_the_median():
    from sklearn.datasets import load_diabetes

    (ds,) = load_suite(["diabetes_bin"])
    target = load_diabetes().target
    np.testing.assert_array_equal(ds.y, (target > np.median(target)).astype(int))
    assert ds.y.sum() == 221  # half of 442: the median splits the targets evenly


def test_penguins_keep_missing_cells_and_categoricals():
    pytest.importorskip("palmerpenguins")
    (ds,) = load_suite(["penguins"])
    assert ds.X.shape == (344, 7)
    assert "species" not in ds.X.columns
    assert ds.n_classes == 3
    # Sorted species: Adelie, Chinstrap, Gentoo.
    assert np.bincount(ds.y).tolist() == [152, 68, 124]
    assert ds.categorical == ["island", "sex"]
    assert all(isinstance(ds.X[c].dtype, pd.CategoricalDtype) for c in ds.categorical)
    assert ds.X["sex"].isna().sum() == 11
    assert ds.X["bill_length_mm"].isna().sum() == 2


def test_seattle_weather_has_numeric_date_features():
    pytest.importorskip("vega_datasets")
    (ds,) = load_suite(["seattle_weather"])
    assert ds.X.shape == (1461, 6)
    assert ds.n_classes == 5
    assert sorted(np.unique(ds.y)) == [0, 1, 2, 3, 4]
    assert "date" not in ds.X.columns
    assert all(pd.api.types.is_numeric_dtype(t) for t in ds.X.dtypes)
    assert ds.X["month"].between(1, 12).all()
    assert ds.X["day_of_year"].between(1, 366).all()
    assert ds.X["day_of_year"].max() == 366  # 2012 and 2016 are leap years


def test_default_suite_is_every_dataset_in_order():
    pytest.importorskip("palmerpenguins")
    pytest.importorskip("vega_datasets")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        suite = load_suite()
    assert [d.name for d in suite] == list(DATASET_NAMES)
    assert len(DATASET_NAMES) == 7


@pytest.mark.parametrize("names", [["iris", "mnist"], "titanic"])
def test_unknown_dataset_names_are_rejected(names):
    bad = "mnist" if "mnist" in names else "titanic"
    with pytest.raises(ValueError, match=bad) as info:
        load_suite(names)
    assert "breast_cancer" in str(info.value)  # the allowed names are listed


def test_duplicate_dataset_names_are_rejected():
    with pytest.raises(ValueError, match="iris"):
        load_suite(["iris", "iris"])


def test_missing_optional_package(monkeypatch):
    # A None entry in sys.modules makes `import palmerpenguins` fail as if it were not installed.
    monkeypatch.setitem(sys.modules, "palmerpenguins", None)
    with pytest.warns(UserWarning, match="palmerpenguins"):
        suite = load_suite()
    assert "penguins" not in [d.name for d in suite]
    assert "iris" in [d.name for d in suite]
    with pytest.raises(ImportError, match=r"penguins.*pip install palmerpenguins"):
        load_suite(["iris", "penguins"])


# --- splits and metrics ---------------------------------------------------------------------------


def test_splits_are_stratified_and_keyed_by_seed_and_split():
    y = np.repeat([0, 1, 2], [40, 20, 40])
    train, test = split_indices(y, 0, test_size=0.5, seed=3)
    assert len(train) == len(test) == 50
    assert not set(train) & set(test)
    assert np.bincount(y[test]).tolist() == [20, 10, 20]
    again = split_indices(y, 0, test_size=0.5, seed=3)
    np.testing.assert_array_equal(train, again[0])
    assert not np.array_equal(train, split_indices(y, 1, test_size=0.5, seed=3)[0])
    assert not np.array_equal(train, split_indices(y, 0, test_size=0.5, seed=4)[0])
    capped, test_capped = split_indices(y, 0, test_size=0.5, seed=3, max_train=10)
    np.testing.assert_array_equal(test_capped, test)
    assert len(capped) == 10 and set(capped) <= set(train)
    assert np.bincount(y[capped]).tolist() == [4, 2, 4]


def test_score_proba():
    y = np.array([0, 1, 1, 0])
    perfect = score_proba(y, np.eye(2)[y], 2)
    assert perfect["accuracy"] == 1.0 and perfect["roc_auc"] == 1.0
    assert 0 < perfect["log_loss"] < 1e-5  # clipped, so finite and positive
    wrong = score_proba(y, np.eye(2)[1 - y], 2)
    assert wrong["accuracy"] == 0.0 and wrong["roc_auc"] == 0.0
    assert np.isfinite(wrong["log_loss"]) and wrong["log_loss"] > 10
    # A class (2) missing from the test labels: no crash, AUC over the classes present.
    y3 = np.array([0, 0, 1, 1])
    p3 = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.3, 0.5, 0.2]])
    s3 = score_proba(y3, p3, 3)
    assert s3["roc_auc"] == 1.0 and s3["accuracy"] == 1.0
    assert s3["log_loss"] == pytest.approx(-np.mean(np.log([0.7, 0.6, 0.7, 0.5])))


# --- evaluate -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def baseline_results() -> pd.DataFrame:
    return evaluate(baseline_models(seed=0), ["iris", "diabetes_bin"], n_splits=2, seed=0)


def test_evaluate_rows_and_metric_ranges(baseline_results):
    r = baseline_results
    assert list(r.columns) == COLUMNS
    assert len(r) == 2 * 3 * 2
    assert set(r["dataset"]) == {"iris", "diabetes_bin"}
    assert list(dict.fromkeys(r["model"])) == ["logreg", "knn", "gbdt"]
    assert all(sorted(g) == [0, 1] for _, g in r.groupby(["dataset", "model"])["split"])
    assert r["accuracy"].between(0, 1).all()
    assert r["roc_auc"].between(0, 1).all()
    assert (r["log_loss"] > 0).all() and np.isfinite(r["log_loss"]).all()
    assert (r["fit_s"] >= 0).all() and (r["predict_s"] >= 0).all()
    # Far better than chance on both: the baselines really learn.
    assert (r.loc[r["dataset"] == "iris", "accuracy"] > 0.85).all()
    assert (r.loc[r["dataset"] == "diabetes_bin", "roc_auc"] > 0.7).all()


def test_every_model_sees_the_same_splits():
    log_a: list = []
    log_b: list = []
    iris, diabetes = load_suite(["iris", "diabetes_bin"])
    models = {"a": lambda: Recorder(log_a), "b": lambda: Recorder(log_b)}
    r = evaluate(models, [iris, diabetes], n_splits=3, test_size=0.4, seed=1)
    assert len(r) == 2 * 2 * 3
    assert len(log_a) == len(log_b) == 2 * 3 * 2  # a fit and a predict per (dataset, split)
    for (ka, rows_a, ya), (kb, rows_b, yb) in zip(log_a, log_b, strict=True):
        assert ka == kb and rows_a == rows_b
        if ya is not None:
            np.testing.assert_array_equal(ya, yb)
    fits = [rows for kind, rows, _ in log_a if kind == "fit"]
    predicts = [rows for kind, rows, _ in log_a if kind == "predict"]
    assert [len(f) for f in fits] == [90] * 3 + [265] * 3  # 60% of 150 and of 442
    assert [len(p) for p in predicts] == [60] * 3 + [177] * 3
    for f, p in zip(fits, predicts, strict=True):
        assert not set(f) & set(p)
    assert fits[0] != fits[1] != fits[2]
    # Split k depends on (seed, k) only: asking for fewer splits gives the first ones again.
    log_c: list = []
    evaluate({"c": lambda: Recorder(log_c)}, [iris], n_splits=2, test_size=0.4, seed=1)
    assert [rows for kind, rows, _ in log_c if kind == "fit"] == fits[:2]


def test_constant_scores_get_auc_one_half():
    log: list = []
    r = evaluate({"prior": lambda: Recorder(log)}, ["iris", "breast_cancer"], n_splits=2)
    assert (r["roc_auc"] == 0.5).all()
    # The prior's log-loss is the label entropy: ln 3 on balanced iris.
    iris = r[r["dataset"] == "iris"]
    np.testing.assert_allclose(iris["log_loss"], np.log(3), rtol=1e-6)


def test_max_train_caps_the_training_rows():
    log: list = []
    evaluate({"a": lambda: Recorder(log)}, ["breast_cancer"], n_splits=2, max_train=40)
    fits = [(rows, y) for kind, rows, y in log if kind == "fit"]
    assert [len(rows) for rows, _ in fits] == [40, 40]
    assert all(set(np.unique(y)) == {0, 1} for _, y in fits)


def test_logreg_on_breast_cancer():
    models = baseline_models(seed=0)
    r = evaluate({"logreg": models["logreg"]}, ["breast_cancer"], n_splits=2)
    assert (r["roc_auc"] > 0.95).all()
    assert (r["accuracy"] > 0.9).all()


def test_baselines_handle_categoricals_and_missing_cells():
    pytest.importorskip("palmerpenguins")
    r = evaluate(baseline_models(seed=0), ["penguins"], n_splits=1)
    assert len(r) == 3
    assert (r["accuracy"] > 0.9).all()
    assert (r["roc_auc"] > 0.97).all()


def test_gbdt_splits_natively_on_categoricals_and_tolerates_unseen_levels():
    rng = np.random.default_rng(0)
    n = 200
    colour = rng.choice(["red", "green", "blue"], n)
    X = pd.DataFrame({"colour": pd.Categorical(colour), "noise": rng.normal(size=n)})
    X.loc[::17, "noise"] = np.nan
    y = (colour == "green").astype(int)
    est = CategoricalGBDT(random_state=0).fit(X, y)
    assert est.model_.is_categorical_.tolist() == [True, False]
    X_new = pd.DataFrame({"colour": pd.Categorical(["green", "purple", None]), "noise": [0.0, np.nan, 1.0]})
    proba = est.predict_proba(X_new)
    assert proba.shape == (3, 2) and np.isfinite(proba).all()
    assert proba[0, 1] > 0.9
    for name in ("logreg", "knn"):
        pipe = baseline_models()[name]().fit(X, y)
        assert np.isfinite(pipe.predict_proba(X_new)).all()


def test_evaluate_rejects_bad_arguments():
    models = {"logreg": baseline_models()["logreg"]}
    with pytest.raises(ValueError, match="n_splits"):
        evaluate(models, ["iris"], n_splits=0)
    with pytest.raises(ValueError, match="test_size"):
        evaluate(models, ["iris"], test_size=1.5)
    with pytest.raises(ValueError, match="models"):
        evaluate({}, ["iris"])
    with pytest.raises(ValueError, match="nope"):
        evaluate(models, ["nope"])
    with pytest.raises(TypeError, match="logreg"):
        evaluate({"logreg": models["logreg"]()}, ["iris"])  # an estimator, not a factory


# --- reporting ------------------------------------------------------------------------------------


def test_summarise(baseline_results):
    s = summarise(baseline_results)
    assert list(s.columns) == ["dataset", "model", "accuracy", "roc_auc", "log_loss", "fit_s", "predict_s"]
    assert len(s) == 2 * 3 + 3
    assert s["dataset"].tolist()[-3:] == ["mean"] * 3
    r = baseline_results
    for model in ("logreg", "knn", "gbdt"):
        per = r[(r["dataset"] == "iris") & (r["model"] == model)]["roc_auc"].mean()
        row = s[(s["dataset"] == "iris") & (s["model"] == model)]
        assert row["roc_auc"].item() == pytest.approx(per)
        per_dataset = s[(s["dataset"] != "mean") & (s["model"] == model)]["accuracy"].mean()
        assert s[(s["dataset"] == "mean") & (s["model"] == model)]["accuracy"].item() == pytest.approx(
            per_dataset
        )


def test_format_table(baseline_results):
    s = summarise(baseline_results)
    text = format_table(s)
    for word in ("logreg", "knn", "gbdt", "iris", "diabetes_bin", "mean", "accuracy", "ROC-AUC", "log-loss"):
        assert word in text
    lines = text.splitlines()
    row = next(line for line in lines if line.startswith("mean") and "logreg" in line)
    expected = s[(s["dataset"] == "mean") & (s["model"] == "logreg")]["roc_auc"].item()
    assert f"{expected:.4f}" in row
    # Fixed width: every data line has the header's length.
    assert {len(line) for line in lines if line and not line.startswith("-")} == {len(lines[0])}


def test_plot_writes_a_png(baseline_results, tmp_path):
    path = plot(summarise(baseline_results), tmp_path / "auc.png")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 5000
