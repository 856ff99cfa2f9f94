"""``TabFMClassifier``: a scikit-learn classifier backed by a pretrained in-context model.

``fit`` only stores the preprocessed training set (in-context learning has no gradient steps);
``predict_proba`` feeds training rows and test rows to the model. Preprocessing mirrors what the
prior emits: categorical columns become ordinal codes, missing cells take the training mean,
constant columns are dropped, and each column is clamped at 4 standard deviations and scaled.
The ensemble averages ``n_estimators`` members, each with its own feature order and class
labelling (class ``c`` becomes ``(c + shift) mod C``), so the result does not depend on the
order of columns or the numbering of classes the model happened to learn best.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin

from tabfm._device import resolve_device
from tabfm.models import ICLConfig, TabICLModel

#: Pretrained models shipped inside the package, by name.
BUNDLED = {"icl-tiny": Path(__file__).parent / "models" / "weights" / "icl-tiny.pt"}


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> TabICLModel:
    """An in-context model from a training checkpoint (a file, a run directory: its
    ``best.ckpt`` if there is one, else its newest ``step-*.ckpt``), or a bundled model's name."""
    from tabfm.train import _checkpoint as ckpt

    path = BUNDLED.get(str(checkpoint), Path(checkpoint))
    if path.is_dir():
        best = path / "best.ckpt"
        found = best if best.is_file() else ckpt.latest(path)
        if found is None:
            raise ValueError(f"checkpoint={str(path)!r} is invalid: the directory holds no checkpoint")
        path = found
    state = ckpt.load(path, map_location="cpu")
    info = state.get("model_info", {})
    if info.get("family") != "icl":
        raise ValueError(
            f"checkpoint {path} holds a {info.get('family')!r} model, not an in-context classifier"
        )
    model = TabICLModel(ICLConfig.from_dict(info["config"]))
    model.load_state_dict(state["model"])
    model.trained_max_features = info.get("max_features")
    return model.to(device).eval()


class _Preprocessor:
    def fit_transform(self, X: Any, categorical_features: Any = None) -> np.ndarray:
        """Fits on the training table and returns it transformed (its columns read once)."""
        cols, names, cat = _columns(X, categorical_features)
        self.n_features_in_ = len(cols)
        self.names = names
        self.categorical = cat
        self.categories: dict[int, dict[Any, int]] = {}
        numeric = np.empty((len(cols[0]), len(cols)), dtype=np.float64)
        for j, col in enumerate(cols):
            if cat[j]:
                present = [v for v in col if not _missing(v)]
                levels = sorted(set(present), key=lambda v: (str(type(v)), v))
                self.categories[j] = {v: i for i, v in enumerate(levels)}
            numeric[:, j] = self._column(j, col)
        all_nan = np.isnan(numeric).all(axis=0)
        if all_nan.any():
            bad = [names[j] for j in np.flatnonzero(all_nan)]
            raise ValueError(f"X has column(s) {bad} with no observed value: drop them before fit")
        self.mean = np.nanmean(numeric, axis=0)
        filled = np.where(np.isnan(numeric), self.mean, numeric)
        std = filled.std(axis=0)
        self.keep = np.flatnonzero(std > 1e-12)
        # Two passes as the prior's Reg2Cls: clamp outliers at 4 sigma, then standardise.
        lo, hi = self.mean - 4 * std, self.mean + 4 * std
        clamped = np.clip(filled, lo, hi)
        self.lo, self.hi = lo, hi
        self.center = clamped.mean(axis=0)
        spread = clamped.std(axis=0)
        self.scale = np.where(spread > 1e-12, spread, 1.0)
        return self._scaled(filled)

    def _column(self, j: int, col: np.ndarray) -> np.ndarray:
        if not self.categorical[j]:
            return np.asarray(col, dtype=np.float64)
        codes = self.categories[j]
        return np.array([codes.get(v, np.nan) if not _missing(v) else np.nan for v in col], dtype=np.float64)

    def transform(self, X: Any) -> np.ndarray:
        cols, _, _ = _columns(X, None, expect=self)
        numeric = np.column_stack([self._column(j, c) for j, c in enumerate(cols)])
        return self._scaled(np.where(np.isnan(numeric), self.mean, numeric))

    def _scaled(self, filled: np.ndarray) -> np.ndarray:
        out = (np.clip(filled, self.lo, self.hi) - self.center) / self.scale
        return out[:, self.keep].astype(np.float32)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def _columns(X: Any, categorical_features: Any, expect: _Preprocessor | None = None):
    """The columns of X as 1-D arrays, their names and whether each is categorical."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is optional
        pd = None
    if pd is not None and isinstance(X, pd.DataFrame):
        names = [str(c) for c in X.columns]
        cols = [
            X[c].to_numpy(dtype=object if not _is_numeric(X[c]) else np.float64, na_value=np.nan)
            for c in X.columns
        ]
        cat = [not _is_numeric(X[c]) for c in X.columns]
    else:
        arr = np.asarray(X)
        if arr.ndim != 2:
            raise ValueError(f"X has shape {arr.shape}: expected a 2-D array (samples, features)")
        names = [f"x{j}" for j in range(arr.shape[1])]
        numeric_dtype = np.issubdtype(arr.dtype, np.number) or arr.dtype == bool
        cols = [arr[:, j] for j in range(arr.shape[1])]
        cat = [not numeric_dtype] * arr.shape[1]
        if not numeric_dtype:  # object arrays: columns whose every value is a number stay numeric
            for j, c in enumerate(cols):
                try:
                    cols[j] = c.astype(np.float64)
                    cat[j] = False
                except (TypeError, ValueError):
                    pass
    if not cols:
        raise ValueError("X has no feature columns")
    if expect is not None:
        if len(cols) != expect.n_features_in_:
            raise ValueError(
                f"X has {len(cols)} features, but the classifier was fitted with {expect.n_features_in_}"
            )
        return cols, names, expect.categorical
    if categorical_features is not None:
        for f in categorical_features:
            j = names.index(str(f)) if str(f) in names else f
            if not isinstance(j, (int, np.integer)) or not 0 <= j < len(cols):
                raise ValueError(f"categorical_features: {f!r} is not a column name or index of X")
            cat[j] = True
    return cols, names, cat


def _is_numeric(series: Any) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(series.dtype) and not isinstance(series.dtype, pd.CategoricalDtype)


class TabFMClassifier(ClassifierMixin, BaseEstimator):
    """Scikit-learn style classifier on a pretrained tabfm in-context model.

    Parameters: ``checkpoint`` (a training checkpoint file or run directory, or the name of a
    bundled model: ``"icl-tiny"``, the default, pretrained 20 minutes on 2 CPU cores; or
    ``model``: an already built :class:`TabICLModel`), ``n_estimators`` ensemble members (feature and class
    permutations), ``device`` ("auto": CUDA when available), ``max_context`` training rows per
    member (a random subset beyond it), ``test_chunk`` test rows per forward pass (exact: a test
    row only attends to training rows), ``categorical_features`` (names or indices; pandas
    category / object columns are categorical anyway), ``max_features`` (columns per member:
    wider tables give each member a random subset; default: the widest table the model saw in
    pretraining, from its checkpoint), ``random_state``.
    """

    def __init__(
        self,
        checkpoint: str | Path | None = "icl-tiny",
        n_estimators: int = 8,
        device: str = "auto",
        max_context: int = 4096,
        test_chunk: int = 1024,
        categorical_features: list[Any] | None = None,
        random_state: int = 0,
        model: TabICLModel | None = None,
        max_features: int | None = None,
    ):
        self.checkpoint = checkpoint
        self.n_estimators = n_estimators
        self.device = device
        self.max_context = max_context
        self.test_chunk = test_chunk
        self.categorical_features = categorical_features
        self.random_state = random_state
        self.model = model
        self.max_features = max_features

    def _check_params(self) -> None:
        if self.checkpoint is None and self.model is None:
            raise ValueError("checkpoint=None is invalid: give a checkpoint path (or model=)")
        for name in ("n_estimators", "max_context", "test_chunk", "max_features"):
            v = getattr(self, name)
            if v is None and name == "max_features":
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r} is invalid: an int >= 1")
        if self.max_context < 2:
            raise ValueError(f"max_context={self.max_context} is invalid: at least 2 training rows")

    def fit(self, X: Any, y: Any) -> TabFMClassifier:
        self._check_params()
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"y has shape {y.shape}: expected a 1-D array of labels")
        n = len(y)
        if n == 0:
            raise ValueError("X and y are empty: fit needs at least 2 labelled rows")
        if len(X) != n:
            raise ValueError(f"X has {len(X)} rows but y has {n}")
        self.device_ = resolve_device(self.device)
        self.model_ = (
            self.model if self.model is not None else load_model(self.checkpoint, self.device_)
        ).to(self.device_)
        self.model_.eval()
        self.classes_, y_enc = np.unique(y, return_inverse=True)
        max_classes = self.model_.config.max_classes
        if len(self.classes_) < 2:
            raise ValueError(f"y has a single class {self.classes_.tolist()}: a classifier needs at least 2")
        if len(self.classes_) > max_classes:
            raise ValueError(f"y has {len(self.classes_)} classes: this model supports at most {max_classes}")
        self.preprocessor_ = _Preprocessor()
        self.X_train_ = self.preprocessor_.fit_transform(X, self.categorical_features)
        self.n_features_in_ = self.preprocessor_.n_features_in_
        self.y_train_ = y_enc.astype(np.int64)
        return self

    @torch.no_grad()
    def predict_proba(self, X: Any) -> np.ndarray:
        if not hasattr(self, "X_train_"):
            raise RuntimeError("this TabFMClassifier is not fitted yet: call fit(X, y) first")
        x_test = self.preprocessor_.transform(X)
        if len(x_test) == 0:
            raise ValueError("X is empty: nothing to predict")
        n_classes = len(self.classes_)
        n_train, h = self.X_train_.shape
        if h == 0:  # every column constant in training: the prior of the training labels
            prior = np.bincount(self.y_train_, minlength=n_classes) / n_train
            return np.tile(prior, (len(x_test), 1))
        width = self.max_features or getattr(self.model_, "trained_max_features", None) or h
        members = []
        for k in range(self.n_estimators):
            rng = np.random.default_rng([self.random_state, k])
            if h > width:  # a random subset per member (in random order)
                features = rng.choice(h, width, replace=False)
            else:
                features = np.arange(h) if k == 0 else rng.permutation(h)
            shift = k % n_classes
            rows = np.arange(n_train)
            if n_train > self.max_context:
                rows = np.sort(rng.choice(n_train, self.max_context, replace=False))
            members.append((features, shift, rows))
        proba = np.zeros((len(x_test), n_classes))
        # Members with the same context size share a forward pass.
        for members_group in _group_by_rows(members):
            xs = torch.from_numpy(np.stack([self.X_train_[r][:, f] for f, _, r in members_group]))
            ys = torch.from_numpy(np.stack([(self.y_train_[r] + s) % n_classes for _, s, r in members_group]))
            xs, ys = xs.to(self.device_), ys.to(self.device_)
            for start in range(0, len(x_test), self.test_chunk):
                chunk = x_test[start : start + self.test_chunk]
                xt = torch.from_numpy(np.stack([chunk[:, f] for f, _, _ in members_group])).to(self.device_)
                logits = self.model_(torch.cat((xs, xt), dim=1), ys)[..., :n_classes].float()
                p = torch.softmax(logits, dim=-1).cpu().numpy()
                for m, (_, s, _) in enumerate(members_group):
                    # column j of member m is class (j - s) mod C of the caller's labelling
                    proba[start : start + len(chunk)] += np.roll(p[m], -s, axis=1)
        return proba / self.n_estimators

    def predict(self, X: Any) -> np.ndarray:
        proba = self.predict_proba(X)  # checks that the classifier is fitted
        return self.classes_[proba.argmax(axis=1)]


def _group_by_rows(
    members: list[tuple[np.ndarray, int, np.ndarray]],
) -> list[list[tuple[np.ndarray, int, np.ndarray]]]:
    groups: dict[int, list[tuple[np.ndarray, int, np.ndarray]]] = {}
    for m in members:
        groups.setdefault(len(m[2]), []).append(m)
    return list(groups.values())
