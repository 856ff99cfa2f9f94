"""Shared helpers of the prior benchmarks (run with ``make bench``; not part of CI).

``pytest benches --benchmark-only --benchmark-json=FILE`` measures; ``benches/report.py FILE``
prints the comparison table. ``pytest benches --benchmark-disable`` runs every benchmark body once
(a quick smoke check of the benchmark code itself).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest


class BatchLog:
    """Accumulates the per-batch counts of the batches a benchmark drew."""

    def __init__(self) -> None:
        self.datasets: list[int] = []
        self.d_sum: list[int] = []
        self.cells: list[int] = []
        self.cpu_s: list[float] = []

    def draw(self, get_batch: Callable[..., tuple], *args: Any) -> tuple:
        """Calls ``get_batch(*args)`` and logs the batch and the process CPU time it took (all
        threads): datasets per CPU-second is far less sensitive to a busy machine than wall time."""
        cpu0 = time.process_time()
        batch = get_batch(*args)
        self.cpu_s.append(time.process_time() - cpu0)
        return self.add(batch)

    def add(self, batch: tuple) -> tuple:
        _, _, d, seq_lens, _ = batch[:5]
        self.datasets.append(int(d.shape[0]))
        self.d_sum.append(int(d.sum()))
        self.cells.append(int((d * seq_lens).sum()))  # generated cells: sum of seq_len * d
        return batch

    @property
    def mean_d(self) -> float | None:
        return sum(self.d_sum) / sum(self.datasets) if self.datasets else None


def tabicl_dataset(prior_type: str, **kwargs: Any) -> Any:
    """TabICL 2.2.0's ``PriorDataset(n_jobs=1)``, after seeding torch / numpy / random once
    (TabICL draws from the global generators); skips when TabICL is not installed."""
    tabicl_prior = pytest.importorskip("tabicl.prior")
    import random
    import warnings

    import numpy as np
    import torch

    warnings.filterwarnings("ignore", module="tabicl")
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    return tabicl_prior.PriorDataset(prior_type=prior_type, n_jobs=1, **kwargs)


@pytest.fixture
def batch_log() -> BatchLog:
    return BatchLog()


def mean_seconds(benchmark) -> float | None:
    """Mean round time of a finished pedantic benchmark (None when benchmarks are disabled).

    The mean, not the median: every round draws a different batch and batches differ in cost
    (network sizes, tree depths), so total datasets / total time is the throughput; the same
    index sequence is used for every tabfm thread count.
    """
    stats = getattr(benchmark, "stats", None)
    if stats is None:
        return None
    return float(stats.stats.mean)


@pytest.fixture
def record_throughput(benchmark) -> Callable[..., None]:
    """``record(impl, prior, threads, log)``: fills ``benchmark.extra_info`` after a run."""
    load_before = os.getloadavg()[0]

    def record(impl: str, prior: str, threads: int, log: BatchLog) -> None:
        med = mean_seconds(benchmark)
        per_call = statistics.mean(log.datasets) if log.datasets else None
        cells_per_call = statistics.mean(log.cells) if log.cells else None
        benchmark.extra_info.update(
            {
                "impl": impl,
                "prior": prior,
                "threads": threads,
                "datasets_per_call": per_call,
                "batches_drawn": len(log.datasets),
                "mean_s": med,
                "datasets_per_s": per_call / med if med and per_call else None,
                "mean_d": log.mean_d,
                "cells_per_s": cells_per_call / med if med and cells_per_call else None,
                "datasets_per_cpu_s": sum(log.datasets) / sum(log.cpu_s) if sum(log.cpu_s) > 0 else None,
                "loadavg_1min_before": load_before,
                "loadavg_1min_after": os.getloadavg()[0],
                "cpu_count": os.cpu_count(),
            }
        )

    return record
