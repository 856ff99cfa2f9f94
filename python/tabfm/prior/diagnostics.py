"""Per-dataset summary statistics of prior batches, for sanity checks and prior-to-prior comparison.

:func:`summarize_batch` takes any batch in the ``(X, y, d, seq_lens, train_sizes)`` format (tabfm's
:class:`~tabfm.prior.PriorDataset` or TabICL's, torch tensors or numpy arrays) and returns one value
per dataset for each entry of :data:`SUMMARIES`. Only the ``d`` active columns and the first
``seq_len`` rows of a dataset are read. Classification batches only (``y`` holds class ids).

The learnability score needs scikit-learn (``pip install scikit-learn``); everything else is numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Summary names, in table order, and what each measures (one value per dataset).
SUMMARIES: dict[str, str] = {
    "n_classes": "realised number of classes (distinct labels over all rows)",
    "binary": "1 if the dataset has exactly 2 classes, else 0",
    "d": "active features (non-constant columns the prior kept)",
    "has_low_card": "1 if some active column has <= low_card_max distinct values, else 0",
    "low_card_share": "share of active columns with <= low_card_max distinct values",
    "class_entropy": "class-balance entropy H(p) / log(n_classes); 1 = balanced, 0 if < 2 classes",
    "knn_gain": "k-NN test accuracy minus the majority-class rate (train majority, on the test rows)",
}


def _as_numpy(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):  # torch tensor (kept optional: numpy-only users need no torch)
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def distinct_counts(x: np.ndarray) -> np.ndarray:
    """Number of distinct values in each column of a 2-D array (NaN counts as one value)."""
    if x.shape[0] == 0:
        return np.zeros(x.shape[1], dtype=np.int64)
    xs = np.sort(x, axis=0)
    diff = xs[1:] != xs[:-1]
    if np.issubdtype(xs.dtype, np.floating):
        diff &= ~(np.isnan(xs[1:]) & np.isnan(xs[:-1]))
    return 1 + diff.sum(axis=0)


def knn_gain(x: np.ndarray, y: np.ndarray, train_size: int, k: int = 5) -> float:
    """k-NN accuracy on rows ``[train_size:]`` (fit on ``[:train_size]``, features standardised with
    the training rows' mean and std) minus the rate of the training majority class on those rows."""
    from sklearn.neighbors import KNeighborsClassifier

    y_tr, y_te = y[:train_size], y[train_size:]
    if len(y_tr) == 0 or len(y_te) == 0:
        return float("nan")
    labels, counts = np.unique(y_tr, return_counts=True)
    majority = float(np.mean(y_te == labels[np.argmax(counts)]))
    if x.shape[1] == 0:
        return 0.0
    x = x.astype(np.float64, copy=False)
    mu = x[:train_size].mean(axis=0)
    sd = x[:train_size].std(axis=0)
    sd[~(sd > 1e-12)] = 1.0
    z = (x - mu) / sd
    knn = KNeighborsClassifier(n_neighbors=min(k, train_size), algorithm="brute")
    knn.fit(z[:train_size], y_tr)
    return float(np.mean(knn.predict(z[train_size:]) == y_te)) - majority


def summarize_dataset(
    x: np.ndarray, y: np.ndarray, train_size: int, *, low_card_max: int = 20, k: int = 5
) -> dict[str, float]:
    """Summaries of one dataset: ``x`` (rows, active features), ``y`` (rows,) class ids."""
    labels, counts = np.unique(y, return_counts=True)
    n_classes = len(labels)
    if n_classes >= 2:
        p = counts / counts.sum()
        entropy = float(-(p * np.log(p)).sum() / np.log(n_classes))
    else:
        entropy = 0.0
    nd = x.shape[1]
    low = distinct_counts(x) <= low_card_max if nd else np.zeros(0, dtype=bool)
    return {
        "n_classes": float(n_classes),
        "binary": float(n_classes == 2),
        "d": float(nd),
        "has_low_card": float(low.any()),
        "low_card_share": float(low.mean()) if nd else 0.0,
        "class_entropy": entropy,
        "knn_gain": knn_gain(x, y, int(train_size), k),
    }


def summarize_batch(
    X: Any, y: Any, d: Any, seq_lens: Any, train_sizes: Any, *, low_card_max: int = 20, k: int = 5
) -> dict[str, np.ndarray]:
    """Summaries of every dataset of a batch: ``{name: float64 array of shape (B,)}`` for each name
    in :data:`SUMMARIES`."""
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    X, y, d = _as_numpy(X), _as_numpy(y), _as_numpy(d)
    seq_lens, train_sizes = _as_numpy(seq_lens), _as_numpy(train_sizes)
    # One BLAS / OpenMP thread: the per-dataset problems are small, and thread start-up and
    # contention (measured: 8 ms vs 18-140 ms per dataset on a busy 2-core machine) dominate.
    with threadpool_limits(limits=1):
        rows = [
            summarize_dataset(
                X[i, : int(seq_lens[i]), : int(d[i])],
                y[i, : int(seq_lens[i])],
                int(train_sizes[i]),
                low_card_max=low_card_max,
                k=k,
            )
            for i in range(X.shape[0])
        ]
    return {name: np.array([r[name] for r in rows], dtype=np.float64) for name in SUMMARIES}


def concat_summaries(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenates the outputs of several :func:`summarize_batch` calls."""
    return {name: np.concatenate([p[name] for p in parts]) for name in SUMMARIES}
