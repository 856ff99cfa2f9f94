"""Corpus throughput: generating in memory vs generating and writing shards vs reading them back.

Targets (issue: corpora on disk): writing keeps >= 90 % of in-memory generation throughput, and
reading a corpus back into training batches is faster than generating it. Per prior (``PRIORS``:
mix_scm, the cheapest prior per dataset, where writing weighs most, and graph_scm), every round
handles the same batches (1024 rows, <= 100 features, all cores):

- ``generate_then_write``: one round is a pair, timed apart: ``PriorDataset.get_batch_numpy(i)``
  for every batch (arrays in memory only), then ``tabfm.corpus.generate_corpus`` for the same
  seed into a fresh directory (generation on all cores while a writer thread compresses, writes
  and syncs the previous batch; atomic renames, checksums). On a shared VM the machine's speed
  drifts by 10-20 % between minutes, more than the effect measured: pairing the two inside each
  round and taking the median of the per-round ratios cancels the drift, where separate
  benchmarks minutes apart would mostly measure it;
- ``read``: ``ShardDataset(batch_size=64)`` over a corpus, every batch padded and copied into
  its tensors (page checksums verified).

``benches/report.py`` prints the ratios (``extra_info``: impl, per-round seconds, datasets_per_s).
"""

from __future__ import annotations

import itertools
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pytest
from tabfm.corpus import ShardDataset, generate_corpus
from tabfm.prior import PriorDataset

ROUNDS = 5
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
def test_generate_then_write(benchmark, tmp_path: Path, prior: str) -> None:
    benchmark.group = f"corpus:{prior}"
    cfg = settings(prior)
    num_batches = cfg["num_batches"]
    prior_args = {k: v for k, v in cfg.items() if k != "num_batches"}
    previous: list[Path] = []
    seconds: dict[str, list[float]] = {"generate": [], "write": []}
    seeds = _seeds()

    def setup():
        for p in previous:  # removing the last round's corpus is not timed
            shutil.rmtree(p)
        previous.clear()
        out = Path(tempfile.mkdtemp(dir=tmp_path))
        previous.append(out)
        return (out, next(seeds)), {}

    def run(out: Path, seed: int) -> None:
        ds = PriorDataset(**prior_args, seed=seed)
        t0 = time.perf_counter()
        for i in range(num_batches):
            ds.get_batch_numpy(i, return_meta=True)  # the writer stores the metadata too
        t1 = time.perf_counter()
        generate_corpus(out, {**cfg, "seed": seed}, progress=False)
        t2 = time.perf_counter()
        seconds["generate"].append(t1 - t0)
        seconds["write"].append(t2 - t1)

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, warmup_rounds=1)
    gen, write = seconds["generate"][1:], seconds["write"][1:]  # the first call is the warm-up
    n = num_batches * cfg["batch_size"]
    benchmark.extra_info.update(
        {
            "impl": "paired",
            "prior": f"corpus:{prior}",
            "datasets_per_call": n,
            "generate_s": gen,
            "write_s": write,
            "generate_datasets_per_s": n * len(gen) / sum(gen),
            "write_datasets_per_s": n * len(write) / sum(write),
            "write_over_generate": statistics.median(g / w for g, w in zip(gen, write, strict=True)),
        }
    )


@pytest.mark.parametrize("prior", PRIORS)
def test_read_back(benchmark, tmp_path: Path, prior: str) -> None:
    benchmark.group = f"corpus:{prior}"
    generate_corpus(tmp_path, {**settings(prior), "seed": 5}, progress=False)
    n, b = PRIORS[prior]

    def run():
        assert sum(1 for _ in ShardDataset(tmp_path, batch_size=b)) == n

    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1)
    _record(benchmark, "read", prior)
