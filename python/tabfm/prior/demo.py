"""``make demo``: draw batches from every prior and print what was generated and how fast.

Run as ``python -m tabfm.prior.demo [--batches N] [--batch-size B] [--n-jobs K] [--seed S]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tabfm.prior import PRIOR_TYPES, PriorDataset


def summarize(prior_type: str, batches: int, batch_size: int, n_jobs: int, seed: int) -> dict[str, float]:
    ds = PriorDataset(
        batch_size=batch_size,
        prior_type=prior_type,
        max_features=100,
        max_seq_len=1024,
        n_jobs=n_jobs,
        seed=seed,
    )
    ds.get_batch(0)  # start the thread pool outside the timed region
    d, classes, attempts, cat, cells = [], [], [], [], 0
    start = time.perf_counter()
    for index in range(1, batches + 1):
        _, _, dd, seq_lens, _, meta = ds.get_batch(index, return_meta=True)
        cells += int((dd * seq_lens).sum())
        d += dd.tolist()
        classes += [m["realised_classes"] for m in meta]
        attempts += [m["attempts"] for m in meta]
        cat += [bool(m["categorical_columns"]) for m in meta]
    elapsed = time.perf_counter() - start
    n = batches * batch_size
    classes_arr = np.array(classes)
    return {
        "datasets": n,
        "mean_d": float(np.mean(d)),
        "mean_classes": float(classes_arr.mean()),
        "binary_share": float((classes_arr == 2).mean()),
        "categorical_share": float(np.mean(cat)),
        "mean_attempts": float(np.mean(attempts)),
        "datasets_per_s": n / elapsed,
        "mcells_per_s": cells / elapsed / 1e6,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=4, help="batches per prior (default 4)")
    parser.add_argument("--batch-size", type=int, default=64, help="datasets per batch (default 64)")
    parser.add_argument("--n-jobs", type=int, default=-1, help="threads (-1: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.batches < 1 or args.batch_size < 1:
        parser.error("--batches and --batch-size must be >= 1")
    header = (
        f"{'prior':<10} {'datasets':>8} {'mean d':>7} {'classes':>7} {'binary':>7} "
        f"{'categ.':>7} {'attempts':>8} {'datasets/s':>11} {'Mcells/s':>9}"
    )
    print(f"tabfm prior demo: T=1024 rows, <=100 features, n_jobs={args.n_jobs}, seed={args.seed}")
    print(header)
    print("-" * len(header))
    for prior in PRIOR_TYPES:
        s = summarize(prior, args.batches, args.batch_size, args.n_jobs, args.seed)
        print(
            f"{prior:<10} {s['datasets']:>8} {s['mean_d']:>7.1f} {s['mean_classes']:>7.2f} "
            f"{s['binary_share']:>7.2f} {s['categorical_share']:>7.2f} {s['mean_attempts']:>8.2f} "
            f"{s['datasets_per_s']:>11.1f} {s['mcells_per_s']:>9.2f}"
        )
    print("classes = realised classes per dataset; categ. = share of datasets with categorical columns")


if __name__ == "__main__":
    main()
