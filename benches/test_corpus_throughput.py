"""Corpus throughput: generating in memory vs generating and writing shards vs reading them back.

Targets (issue: corpora on disk): writing keeps >= 90 % of in-memory generation throughput, and
reading a corpus back into training batches is faster than generating it. Per prior (``PRIORS``:
mix_scm, the cheapest prior per dataset, where writing weighs most, and graph_scm), one round of
each benchmark handles the same batches (1024 rows, <= 100 features, all cores):

- ``generate``: ``PriorDataset.get_batch_numpy(i)`` for every batch (arrays in memory only);
- ``write``: ``tabfm.corpus.generate_corpus`` into a fresh directory (generation on all cores
  while a writer thread compresses and writes the previous batch, atomic renames, checksums);
- ``read``: ``ShardDataset(batch_size=64)`` over that corpus, every batch padded and copied into
  its tensors (checksums verified).

``benches/report.py`` prints the ratios (``extra_info``: impl, datasets_per_s).
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

import pytest
from tabfm.corpus import ShardDataset, generate_corpus
from tabfm.prior import PriorDataset

ROUNDS = 3
#: prior -> (batches per round, datasets per batch)
PRIORS = {"mix_scm": (12, 64), "graph_scm": (2, 32)}


def _seeds():
    """Round r of every benchmark uses seed 100 + r: generating and writing see the same batches
    (datasets differ in cost by an order of magnitude, so different seeds would be noise)."""
    return itertools.count(100)


def settings(prior: str) -> dict:
    n, b = PRIORS[prior]
    return dict(prior_type=prior, batch_size=b, num_batches=n, max_features=100, max_seq_len=1024, n_jobs=-1)


def _record(benchmark, impl: str, prior: str) -> None:
    stats = getattr(benchmark, "stats", None)
    mean = float(stats.stats.mean) if stats is not None else None
    n = PRIORS[prior][0] * PRIORS[prior][1]
    benchmark.extra_info.update(
        {
            "impl": impl,
            "prior": f"corpus:{prior}",
            "datasets_per_call": n,
            "datasets_per_s": n / mean if mean else None,
        }
    )


@pytest.mark.parametrize("prior", PRIORS)
def test_generate_in_memory(benchmark, prior: str) -> None:
    benchmark.group = f"corpus:{prior}"
    cfg = settings(prior)
    num_batches = cfg.pop("num_batches")
    seeds = _seeds()

    def setup():
        return (PriorDataset(**{**cfg, "seed": next(seeds)}),), {}

    def run(ds):
        for i in range(num_batches):
            ds.get_batch_numpy(i, return_meta=True)  # the writer stores the metadata too

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, warmup_rounds=1)
    _record(benchmark, "generate", prior)


@pytest.mark.parametrize("prior", PRIORS)
def test_generate_and_write(benchmark, tmp_path: Path, prior: str) -> None:
    benchmark.group = f"corpus:{prior}"
    previous: list[Path] = []
    seeds = _seeds()

    def setup():
        for p in previous:  # removing the last round's corpus is not timed
            shutil.rmtree(p)
        previous.clear()
        out = Path(tempfile.mkdtemp(dir=tmp_path))
        previous.append(out)
        return (out, {**settings(prior), "seed": next(seeds)}), {}

    benchmark.pedantic(
        lambda out, s: generate_corpus(out, s, progress=False), setup=setup, rounds=ROUNDS, warmup_rounds=1
    )
    _record(benchmark, "write", prior)


@pytest.mark.parametrize("prior", PRIORS)
def test_read_back(benchmark, tmp_path: Path, prior: str) -> None:
    benchmark.group = f"corpus:{prior}"
    generate_corpus(tmp_path, {**settings(prior), "seed": 5}, progress=False)
    n, b = PRIORS[prior]

    def run():
        assert sum(1 for _ in ShardDataset(tmp_path, batch_size=b)) == n

    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1)
    _record(benchmark, "read", prior)
