"""Prior throughput, tabfm vs TabICL 2.2.0, and tabfm's peak memory for large batches.

Throughput: for each prior (``mlp_scm``, ``tree_scm``, ``mix_scm``) and the same settings
(``SETTINGS``: B = 64, groups of 4, <= 100 features, 1024 rows, train fraction
U(0.1, 0.9), <= 10 classes), one ``get_batch`` call is one round:

- ``tabfm-1T`` / ``tabfm-2T``: ``tabfm.prior.PriorDataset(n_jobs=1 | 2)``; the setup hands every
  round (warm-up included) a fresh batch index, so no batch is generated twice;
- ``tabicl-1T``: ``tabicl.prior.PriorDataset(n_jobs=1)`` (in-process, single-threaded: TabICL's
  ``n_jobs > 1`` crashes in 2.2.0), seeded once through torch / numpy / random; every call draws
  new batches from its global RNG state.

``extra_info`` holds impl, prior, threads, datasets_per_call, datasets_per_s (from the mean
round), mean_d, cells_per_s (cells = sum of seq_len * d) and datasets_per_cpu_s (process CPU
time, all threads: the figure to trust on a busy machine). Benchmarks are grouped by prior;
``benches/report.py`` turns the JSON into the README table (speed-up ratios and targets).

Memory: peak RSS of a fresh interpreter that imports tabfm and draws 2 batches of 512 datasets
(mix_scm, n_jobs=2, 1024 rows, <= 100 features), holding the previous batch while drawing the
next as a training loop does. Must stay under 1 GB.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest
from conftest import tabicl_dataset

PRIORS = ("mlp_scm", "tree_scm", "mix_scm")
IMPLS = ("tabicl-1T", "tabfm-1T", "tabfm-2T")

#: One configuration for both implementations: TabICL's v1 stage-1 settings with B = 64
#: (every dataset has 1024 rows since min_seq_len is None).
SETTINGS = {
    "batch_size": 64,
    "batch_size_per_gp": 4,
    "min_features": 2,
    "max_features": 100,
    "max_classes": 10,
    "min_seq_len": None,
    "max_seq_len": 1024,
    "min_train_size": 0.1,
    "max_train_size": 0.9,
}

#: Rounds per benchmark, small enough for a 2-core machine: a TabICL mlp_scm batch of 64 takes
#: ~15 s on one core, tabfm's well under 1 s.
TABICL_ROUNDS, TABICL_WARMUP = 3, 0
TABFM_ROUNDS, TABFM_WARMUP = 15, 1
PEAK_RSS_LIMIT = 1_000_000_000  # bytes ("< 1 GB")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("prior", PRIORS)
def test_prior_throughput(benchmark, batch_log, record_throughput, prior, impl):
    benchmark.group = f"prior={prior}"
    log = batch_log
    if impl == "tabicl-1T":
        ds = tabicl_dataset(prior, **SETTINGS)

        def draw():
            return log.draw(ds.get_batch)

        benchmark.pedantic(draw, rounds=TABICL_ROUNDS, warmup_rounds=TABICL_WARMUP)
        record_throughput("tabicl", prior, 1, log)
    else:
        from tabfm.prior import PriorDataset

        threads = int(impl[len("tabfm-")])
        ds = PriorDataset(prior_type=prior, n_jobs=threads, seed=0, **SETTINGS)
        indices = itertools.count()  # same index sequence for 1 and 2 threads: same work

        def fresh_index():
            return (next(indices),), {}

        def draw(index):
            return log.draw(ds.get_batch, index)

        benchmark.pedantic(draw, setup=fresh_index, rounds=TABFM_ROUNDS, warmup_rounds=TABFM_WARMUP)
        record_throughput("tabfm", prior, threads, log)
    assert log.datasets and all(n == SETTINGS["batch_size"] for n in log.datasets)


_MEMORY_SCRIPT = r"""
import json, resource, sys

def status(*keys):
    # Memory fields of /proc/self/status in bytes (Linux; none elsewhere).
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in keys:
                    out[key] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out

def maxrss():
    # Linux: VmHWM, the high-water mark of this process image. Not ru_maxrss: across fork + exec
    # Linux carries the parent's high-water mark into it (here the pytest process's).
    hwm = status("VmHWM").get("VmHWM")
    if hwm is not None:
        return hwm
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024  # bytes (Linux reports KiB)

from tabfm.prior import PriorDataset
import_rss = maxrss()
# Resident memory by kind: anonymous pages, and file pages (mapped shared libraries).
import_split = status("RssAnon", "RssFile")
ds = PriorDataset(batch_size=512, batch_size_per_gp=4, prior_type="mix_scm", max_features=100,
                  max_seq_len=1024, min_train_size=0.1, max_train_size=0.9, max_classes=10,
                  n_jobs=2, seed=0)
batch = None
x_bytes = 0
for index in range(2):
    batch = ds.get_batch(index)  # the previous batch is alive while the next one is generated
    x_bytes = batch[0].numel() * batch[0].element_size()
print("RESULT " + json.dumps({"peak_rss": maxrss(), "import_rss": import_rss, "x_bytes": x_bytes,
                              "import_anon": import_split.get("RssAnon", 0), "import_file": import_split.get("RssFile", 0),
                              "datasets": int(batch[2].shape[0]), "mean_d": float(batch[2].float().mean())}))
"""


def test_peak_rss_batch512(benchmark):
    """Peak RSS of a fresh process drawing 2 batches of 512 (tabfm mix_scm, 2 threads)."""
    benchmark.group = "memory"
    results: list[dict] = []

    def run():
        cp = subprocess.run(
            [sys.executable, "-c", _MEMORY_SCRIPT], capture_output=True, text=True, timeout=600
        )
        lines = [line for line in cp.stdout.splitlines() if line.startswith("RESULT ")]
        assert cp.returncode == 0 and lines, (
            f"memory subprocess failed (rc={cp.returncode}):\n{cp.stderr[-2000:]}"
        )
        results.append(json.loads(lines[-1][len("RESULT ") :]))

    benchmark.pedantic(run, rounds=1, warmup_rounds=0)
    r = results[-1]
    mb = 1024**2
    benchmark.extra_info.update(
        {
            "impl": "tabfm",
            "prior": "mix_scm",
            "threads": 2,
            "batch_size": 512,
            "batches": 2,
            "peak_rss_mb": r["peak_rss"] / mb,
            "import_rss_mb": r["import_rss"] / mb,
            # What the import leaves resident, by kind: on Linux half or more of a CUDA build of
            # torch's is file pages of its shared libraries, mapped at import even without a GPU.
            "import_anon_mb": r["import_anon"] / mb,
            "import_file_mb": r["import_file"] / mb,
            "x_per_batch_mb": r["x_bytes"] / mb,
            "mean_d": r["mean_d"],
            "limit_mb": PEAK_RSS_LIMIT / mb,
        }
    )
    assert r["datasets"] == 512
    assert r["peak_rss"] < PEAK_RSS_LIMIT, (
        f"peak RSS {r['peak_rss'] / mb:.0f} MiB >= 1 GB while drawing 2 batches of 512 "
        f"(after import: {r['import_rss'] / mb:.0f} MiB, of which {r['import_file'] / mb:.0f} MiB file pages; "
        f"X per batch {r['x_bytes'] / mb:.0f} MiB)"
    )
