"""Real classification datasets that load offline from installed packages.

scikit-learn's bundled sets (iris, wine, breast_cancer, digits, and diabetes binarised at its median
target as ``diabetes_bin``), palmerpenguins' penguins (categorical columns and missing cells) and
vega_datasets' seattle_weather (5 classes). Nothing here touches the network: no ``fetch_*`` and, for
vega_datasets, only its bundled local files.

palmerpenguins and vega_datasets are optional and imported lazily: when one is missing, its dataset is
skipped with a warning, or, if it was asked for by name, an ImportError says what to install.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["DATASET_NAMES", "RealDataset", "load_suite"]


@dataclass(eq=False)
class RealDataset:
    """One classification task: features as a DataFrame, labels encoded to ``0..n_classes-1``.

    Categorical columns (listed in ``categorical``) have pandas ``category`` dtype; missing cells stay NaN.
    """

    name: str
    X: pd.DataFrame = field(repr=False)
    y: np.ndarray = field(repr=False)
    n_classes: int
    categorical: list[str] = field(default_factory=list)
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.X) != len(self.y):
            raise ValueError(f"dataset {self.name!r}: X has {len(self.X)} rows but y has {len(self.y)}")
        missing = [c for c in self.categorical if c not in self.X.columns]
        if missing:
            raise ValueError(f"dataset {self.name!r}: categorical columns {missing} are not in X")

    @property
    def shape(self) -> tuple[int, int]:
        return self.X.shape


def _encode_labels(y: Any) -> tuple[np.ndarray, int]:
    # Sorted unique values -> 0..C-1, so class k is the k-th smallest label.
    classes, codes = np.unique(np.asarray(y), return_inverse=True)
    return codes.astype(np.int64), len(classes)


def _sklearn_loader(name: str) -> Callable[[], RealDataset]:
    def load() -> RealDataset:
        from sklearn import datasets

        bunch = getattr(datasets, f"load_{name}")(as_frame=True)
        y, k = _encode_labels(bunch.target)
        return RealDataset(name, bunch.data, y, k, [], f"sklearn.datasets.load_{name}")

    return load


def _diabetes_bin() -> RealDataset:
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(as_frame=True)
    target = bunch.target.to_numpy()
    y = (target > np.median(target)).astype(np.int64)
    return RealDataset(
        "diabetes_bin", bunch.data, y, 2, [], "sklearn.datasets.load_diabetes, target > median"
    )


def _penguins(palmerpenguins: ModuleType) -> RealDataset:
    df = palmerpenguins.load_penguins()
    # Only rows without a label are dropped; NaN feature cells are part of the task.
    df = df[df["species"].notna()].reset_index(drop=True)
    y, k = _encode_labels(df["species"].astype(str))
    X = df.drop(columns=["species"])
    categorical = ["island", "sex"]
    for c in categorical:
        X[c] = X[c].astype("category")
    return RealDataset("penguins", X, y, k, categorical, "palmerpenguins.load_penguins")


def _seattle_weather(vega_datasets: ModuleType) -> RealDataset:
    # local_data only serves the files bundled with the package (`data` would fall back to a URL).
    df = vega_datasets.local_data.seattle_weather()
    df = df[df["weather"].notna()].reset_index(drop=True)
    y, k = _encode_labels(df["weather"].astype(str))
    date = pd.to_datetime(df["date"])
    # Season is what matters for the weather; the raw timestamp would be a non-numeric column.
    X = df.drop(columns=["weather", "date"]).assign(
        month=date.dt.month.astype(np.int64), day_of_year=date.dt.day_of_year.astype(np.int64)
    )
    return RealDataset("seattle_weather", X, y, k, [], "vega_datasets.local_data.seattle_weather")


@dataclass(frozen=True)
class _Spec:
    load: Callable[..., RealDataset]
    module: str | None = None  # optional module passed to `load`; None: only scikit-learn
    package: str | None = None  # what to `pip install` for `module`


_SPECS: dict[str, _Spec] = {
    "iris": _Spec(_sklearn_loader("iris")),
    "wine": _Spec(_sklearn_loader("wine")),
    "breast_cancer": _Spec(_sklearn_loader("breast_cancer")),
    "digits": _Spec(_sklearn_loader("digits")),
    "diabetes_bin": _Spec(_diabetes_bin),
    "penguins": _Spec(_penguins, "palmerpenguins", "palmerpenguins"),
    "seattle_weather": _Spec(_seattle_weather, "vega_datasets", "vega_datasets"),
}

DATASET_NAMES: tuple[str, ...] = tuple(_SPECS)


def load_suite(names: Iterable[str] | str | None = None) -> list[RealDataset]:
    """Load the named datasets, in the given order (default: all of ``DATASET_NAMES``).

    With ``names=None``, a dataset whose optional package is not installed is skipped with a warning;
    a dataset asked for by name whose package is missing raises ImportError naming the package.
    """
    explicit = names is not None
    if names is None:
        chosen = list(DATASET_NAMES)
    elif isinstance(names, str):
        chosen = [names]
    else:
        chosen = list(names)
    unknown = [n for n in chosen if n not in _SPECS]
    if unknown:
        raise ValueError(f"unknown dataset name(s) {unknown}: choose from {list(DATASET_NAMES)}")
    duplicated = sorted({n for n in chosen if chosen.count(n) > 1})
    if duplicated:
        raise ValueError(f"dataset name(s) {duplicated} given more than once")

    out = []
    for name in chosen:
        spec = _SPECS[name]
        if spec.module is None:
            out.append(spec.load())
            continue
        try:
            module = importlib.import_module(spec.module)
        except ImportError as err:
            msg = f"dataset {name!r} needs the package {spec.package!r} (pip install {spec.package})"
            if explicit:
                raise ImportError(msg) from err
            warnings.warn(f"skipping {msg}", stacklevel=2)
            continue
        out.append(spec.load(module))
    return out
