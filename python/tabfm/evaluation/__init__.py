"""Offline real-data evaluation of tabular classifiers.

:func:`load_suite` loads small real datasets bundled with installed packages, :func:`evaluate` scores
classifiers on stratified splits shared by every model, :func:`baseline_models` gives the reference
classifiers, and :func:`summarise`, :func:`format_table` and :func:`plot` report the results::

    from tabfm.evaluation import baseline_models, evaluate, format_table, summarise

    results = evaluate(baseline_models(seed=0), ["iris", "penguins"], n_splits=5)
    print(format_table(summarise(results)))
"""

from __future__ import annotations

from tabfm.evaluation.datasets import DATASET_NAMES, RealDataset, load_suite
from tabfm.evaluation.suite import baseline_models, evaluate, format_table, plot, summarise

__all__ = [
    "DATASET_NAMES",
    "RealDataset",
    "baseline_models",
    "evaluate",
    "format_table",
    "load_suite",
    "plot",
    "summarise",
]
