"""Classifiers against each other on real datasets: shared stratified splits, metrics, table and plot.

Every model is a factory returning a fresh estimator with the scikit-learn ``fit(X, y)`` /
``predict_proba(X)`` API. It gets the raw DataFrame of a :class:`RealDataset` (categorical columns of
``category`` dtype, NaN cells), so it brings its own preprocessing; :func:`baseline_models` does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score
from sklearn.model_selection import StratifiedShuffleSplit
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, StandardScaler
from sklearn.utils import resample

from tabfm.evaluation.datasets import RealDataset, load_suite

__all__ = [
    "METRICS",
    "PROBA_CLIP",
    "CategoricalGBDT",
    "baseline_models",
    "evaluate",
    "format_table",
    "plot",
    "score_proba",
    "split_indices",
    "summarise",
]

METRICS = ("accuracy", "roc_auc", "log_loss")
RESULT_COLUMNS = ("dataset", "model", "split", *METRICS, "fit_s", "predict_s")
# Probabilities are clipped to [PROBA_CLIP, 1] (then renormalised) before the log-loss, so that one
# confidently wrong prediction costs at most -log(1e-6) ~ 13.8 nats instead of infinity.
PROBA_CLIP = 1e-6


# --- baselines ------------------------------------------------------------------------------------


def _numeric_columns(X: pd.DataFrame) -> list[Any]:
    # Picked by dtype when the ColumnTransformer is fitted. Booleans go to the categorical side.
    return [
        c
        for c in X.columns
        if pd.api.types.is_numeric_dtype(X[c].dtype) and not pd.api.types.is_bool_dtype(X[c].dtype)
    ]


def _categorical_columns(X: pd.DataFrame) -> list[Any]:
    numeric = set(_numeric_columns(X))
    return [c for c in X.columns if c not in numeric]


def _as_object(X: pd.DataFrame) -> pd.DataFrame:
    # sklearn's encoders want plain object columns with np.nan for missing; pandas' category and str
    # dtypes carry their own missing markers.
    return pd.DataFrame(
        {c: X[c].astype(object).where(X[c].notna(), np.nan) for c in X.columns}, index=X.index
    )


def _one_hot_preprocessor() -> ColumnTransformer:
    """Numeric: median imputation then standard scaling. Categorical: one-hot, NaN its own level."""
    return ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), _numeric_columns),
            (
                "cat",
                make_pipeline(
                    FunctionTransformer(_as_object, feature_names_out="one-to-one"),
                    OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                ),
                _categorical_columns,
            ),
        ]
    )


class CategoricalGBDT(ClassifierMixin, BaseEstimator):
    """HistGradientBoostingClassifier with native categorical splits on a raw DataFrame.

    Non-numeric columns (found by dtype at fit time) are ordinal-encoded, with NaN and unseen levels
    left as NaN, which the booster handles natively; numeric columns pass through with their NaN.
    """

    def __init__(self, random_state: int | None = None, max_iter: int = 100, learning_rate: float = 0.1):
        self.random_state = random_state
        self.max_iter = max_iter
        self.learning_rate = learning_rate

    def fit(self, X: pd.DataFrame, y: Any) -> CategoricalGBDT:
        # Categorical columns first, so that their positions are 0..n_categorical-1 after the transform.
        self.encoder_ = ColumnTransformer(
            [
                (
                    "cat",
                    make_pipeline(
                        FunctionTransformer(_as_object, feature_names_out="one-to-one"),
                        # The booster takes at most 255 levels: the rarest share one beyond that.
                        OrdinalEncoder(
                            handle_unknown="use_encoded_value",
                            unknown_value=np.nan,
                            encoded_missing_value=np.nan,
                            max_categories=255,
                        ),
                    ),
                    _categorical_columns,
                ),
                ("num", "passthrough", _numeric_columns),
            ]
        )
        Z = self.encoder_.fit_transform(X)
        n_categorical = len(self.encoder_.transformers_[0][2])
        self.model_ = HistGradientBoostingClassifier(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            categorical_features=np.arange(n_categorical) if n_categorical else None,
            random_state=self.random_state,
        ).fit(Z, y)
        self.classes_ = self.model_.classes_
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self.model_.predict_proba(self.encoder_.transform(X))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


def _logreg() -> Pipeline:
    return make_pipeline(_one_hot_preprocessor(), LogisticRegression(max_iter=2000))


def _knn() -> Pipeline:
    # A fixed k=5 with distance weighting: no tuning, so that the baseline stays cheap and predictable.
    return make_pipeline(_one_hot_preprocessor(), KNeighborsClassifier(n_neighbors=5, weights="distance"))


def _gbdt(seed: int) -> CategoricalGBDT:
    return CategoricalGBDT(random_state=seed)


def baseline_models(seed: int = 0) -> dict[str, Callable[[], Any]]:
    """Factories of the reference classifiers, all taking raw DataFrames.

    - ``logreg``: median imputation + standard scaling of numeric columns, one-hot of categorical ones,
      ``LogisticRegression(max_iter=2000)``.
    - ``knn``: the same preprocessing, ``KNeighborsClassifier(n_neighbors=5, weights="distance")``.
    - ``gbdt``: :class:`CategoricalGBDT` (sklearn's histogram GBDT, native categorical splits).
    """
    return {"logreg": _logreg, "knn": _knn, "gbdt": partial(_gbdt, seed)}


# --- metrics --------------------------------------------------------------------------------------


def score_proba(y: np.ndarray, proba: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy (of the argmax), ROC-AUC and log-loss of class probabilities ``proba[i, k]``.

    ROC-AUC is the positive-class AUC for 2 classes and the macro one-vs-rest AUC otherwise; if the
    test labels miss some classes, the macro average runs over the classes present (NaN if fewer than
    2 are). Log-loss knows all ``n_classes`` labels, so missing test classes don't change its shape.
    """
    y = np.asarray(y)
    proba = np.clip(np.asarray(proba, dtype=np.float64), PROBA_CLIP, 1.0)
    proba /= proba.sum(axis=1, keepdims=True)
    labels = np.arange(n_classes)
    present = np.unique(y)
    if len(present) < 2:
        auc = float("nan")
    elif n_classes == 2:
        auc = roc_auc_score(y, proba[:, 1])
    elif len(present) == n_classes:
        auc = roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=labels)
    else:
        auc = float(np.mean([roc_auc_score(y == k, proba[:, k]) for k in present]))
    return {
        "accuracy": float(accuracy_score(y, proba.argmax(axis=1))),
        "roc_auc": float(auc),
        "log_loss": float(log_loss(y, proba, labels=labels)),
    }


def _full_proba(est: Any, proba: Any, n_rows: int, n_classes: int, what: str) -> np.ndarray:
    """Columns of ``proba`` placed at the labels in ``est.classes_`` (a model fitted on a training set
    that misses a class has fewer columns than ``n_classes``)."""
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[0] != n_rows:
        raise ValueError(
            f"{what}: predict_proba returned shape {proba.shape}, expected ({n_rows}, {n_classes})"
        )
    if proba.shape[1] == n_classes:
        return proba
    classes = getattr(est, "classes_", None)
    if classes is None or len(classes) != proba.shape[1]:
        raise ValueError(
            f"{what}: predict_proba returned {proba.shape[1]} columns for {n_classes} classes "
            "and the estimator has no matching classes_"
        )
    full = np.zeros((n_rows, n_classes))
    full[:, np.asarray(classes, dtype=np.int64)] = proba
    return full


# --- the evaluation -------------------------------------------------------------------------------


def split_indices(
    y: np.ndarray, split: int, test_size: float = 0.5, seed: int = 0, max_train: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) row positions of split number ``split``: a stratified shuffle split whose
    randomness depends only on ``(seed, split)``, so that split k is the same whatever ``n_splits``
    and for every model. ``max_train`` caps the training rows by a stratified subsample."""
    state = np.random.SeedSequence([seed, split]).generate_state(2)
    sss = StratifiedShuffleSplit(n_splits=1, test_size=test_size, random_state=int(state[0]))
    train, test = next(sss.split(np.zeros(len(y)), y))
    if max_train is not None and len(train) > max_train:
        train = resample(
            train, replace=False, n_samples=max_train, stratify=y[train], random_state=int(state[1])
        )
    return np.sort(train), np.sort(test)


def _resolve_datasets(datasets: Iterable[str | RealDataset] | str | RealDataset | None) -> list[RealDataset]:
    if datasets is None:
        return load_suite()
    if isinstance(datasets, str | RealDataset):
        datasets = [datasets]
    out = []
    for d in datasets:
        out.extend([d] if isinstance(d, RealDataset) else load_suite([d]))
    names = [d.name for d in out]
    if len(set(names)) != len(names) or "mean" in names:
        raise ValueError(f"dataset names {names} must be unique and not 'mean' (the summary's row)")
    return out


def evaluate(
    models: dict[str, Callable[[], Any]],
    datasets: Iterable[str | RealDataset] | str | RealDataset | None = None,
    n_splits: int = 5,
    test_size: float = 0.5,
    seed: int = 0,
    max_train: int | None = None,
) -> pd.DataFrame:
    """Fit and score every model on every split of every dataset.

    ``models`` maps a name to a factory called once per (dataset, split) for a fresh estimator.
    ``datasets`` are names from ``DATASET_NAMES`` and/or :class:`RealDataset` objects (default: the
    whole suite). Returns one row per (dataset, model, split) with the columns ``dataset, model, split,
    accuracy, roc_auc, log_loss, fit_s, predict_s`` (seconds of wall time).
    """
    if not models:
        raise ValueError("models is empty: give at least one name -> estimator factory")
    not_callable = [name for name, make in models.items() if not callable(make)]
    if not_callable:
        raise TypeError(f"models {not_callable} are not factories (callables returning an estimator)")
    if isinstance(n_splits, bool) or not isinstance(n_splits, int) or n_splits < 1:
        raise ValueError(f"n_splits={n_splits!r} is invalid: an int >= 1")
    if not 0 < test_size < 1:
        raise ValueError(f"test_size={test_size!r} is invalid: a fraction in (0, 1)")
    if max_train is not None and (
        isinstance(max_train, bool) or not isinstance(max_train, int) or max_train < 2
    ):
        raise ValueError(f"max_train={max_train!r} is invalid: None or an int >= 2")
    suite = _resolve_datasets(datasets)
    if not suite:
        raise ValueError("no datasets to evaluate on")

    rows = []
    for ds in suite:
        y = np.asarray(ds.y)
        for split in range(n_splits):
            try:
                train, test = split_indices(y, split, test_size, seed, max_train)
            except ValueError as err:
                err.add_note(f"while splitting dataset {ds.name!r}")
                raise
            # Original row labels are kept in the index: an estimator may look at them, never needs to.
            X_train, X_test = ds.X.iloc[train], ds.X.iloc[test]
            for name, make in models.items():
                what = f"model {name!r} on {ds.name!r} split {split}"
                est = make()
                try:
                    t0 = time.perf_counter()
                    est.fit(X_train, y[train])
                    t1 = time.perf_counter()
                    raw = est.predict_proba(X_test)
                    t2 = time.perf_counter()
                except Exception as err:
                    err.add_note(f"while evaluating {what}")
                    raise
                proba = _full_proba(est, raw, len(test), ds.n_classes, what)
                rows.append(
                    {
                        "dataset": ds.name,
                        "model": name,
                        "split": split,
                        **score_proba(y[test], proba, ds.n_classes),
                        "fit_s": t1 - t0,
                        "predict_s": t2 - t1,
                    }
                )
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


# --- reporting ------------------------------------------------------------------------------------


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Means over splits per (dataset, model), then one ``dataset == "mean"`` row per model: the mean
    over datasets of those (each dataset weighs the same). Columns: dataset, model, the metrics,
    fit_s, predict_s; datasets and models keep the order of ``results``."""
    values = [*METRICS, "fit_s", "predict_s"]
    per = results.groupby(["dataset", "model"], sort=False)[values].mean().reset_index()
    overall = per.groupby("model", sort=False)[values].mean().reset_index()
    overall.insert(0, "dataset", "mean")
    return pd.concat([per, overall], ignore_index=True)


def format_table(summary: pd.DataFrame) -> str:
    """A fixed-width text table of :func:`summarise`'s output, one line per (dataset, model)."""
    dw = max([len("dataset"), *(len(str(d)) for d in summary["dataset"])])
    mw = max([len("model"), *(len(str(m)) for m in summary["model"])])
    header = (
        f"{'dataset':<{dw}}  {'model':<{mw}}  {'accuracy':>8}  {'ROC-AUC':>8}  {'log-loss':>8}  {'fit s':>8}"
    )
    lines = [header, "-" * len(header)]
    previous = None
    for row in summary.itertuples(index=False):
        if previous is not None and row.dataset != previous:
            # A rule before the mean block, a blank line between datasets.
            lines.append("-" * len(header) if row.dataset == "mean" else "")
        previous = row.dataset
        lines.append(
            f"{row.dataset!s:<{dw}}  {row.model!s:<{mw}}  {row.accuracy:>8.4f}  {row.roc_auc:>8.4f}  "
            f"{row.log_loss:>8.4f}  {row.fit_s:>8.3f}"
        )
    return "\n".join(lines)


def plot(summary: pd.DataFrame, path: str | Path) -> Path:
    """Save a PNG bar chart of ROC-AUC per dataset (and the mean), one bar per model; returns the path."""
    # The Agg canvas directly, not pyplot: no global backend switch, no GUI, safe in threads and tests.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    table = summary.pivot(index="dataset", columns="model", values="roc_auc")
    datasets = list(dict.fromkeys(summary["dataset"]))
    models = list(dict.fromkeys(summary["model"]))
    table = table.loc[datasets, models]

    fig = Figure(figsize=(max(6.0, 1.1 * len(datasets) + 3), 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(len(datasets))
    width = 0.8 / len(models)
    for i, model in enumerate(models):
        ax.bar(x - 0.4 + (i + 0.5) * width, table[model].to_numpy(), width, label=model)
    ax.set_xticks(x, datasets, rotation=30, ha="right")
    finite = table.to_numpy()[np.isfinite(table.to_numpy())]
    low = float(finite.min()) if finite.size else 0.5
    # Zoomed on the bars (AUCs near 1 would be indistinguishable from 0); chance level dotted if in view.
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    ax.set_ylim(max(0.0, low - 0.05), 1.005)
    ax.set_ylabel("ROC-AUC (mean over splits)")
    ax.set_title("ROC-AUC per dataset")
    if datasets[-1] == "mean" and len(datasets) > 1:
        ax.axvline(len(datasets) - 1.5, color="grey", linewidth=0.8)
    # Outside the axes: inside, it would hide bars whatever the corner.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path
