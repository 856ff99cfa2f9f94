"""Long-running dagzoo worker for ``benches/test_graph_throughput.py`` (not imported by tabfm).

dagzoo 0.20.0 needs Python >= 3.13, so it lives in its own virtual environment (``make dagzoo-venv``)
and the benchmark talks to this script over pipes:

    .venv-dagzoo/bin/python benches/dagzoo_driver.py

On start it imports dagzoo, pins torch to one thread, builds one ``GeneratorConfig`` and writes one
JSON line ``{"ready": true, ...}`` (versions, thread count, the config used). Then, for every JSON
request line ``{"seed": s, "n": k}`` on stdin, it generates ``k`` datasets through dagzoo's public
in-process path (``generate_batch_iter(config, num_datasets=k, seed=s, device="cpu")``) and answers
one JSON line::

    {"datasets": k, "cells": ..., "d_sum": ..., "d_min": ..., "d_max": ...,
     "rows_min": ..., "rows_max": ..., "classes_min": ..., "classes_max": ...,
     "seconds": ..., "cpu_seconds": ...}

``cells`` is the sum over datasets of rows * features (the ``seq_len * d`` of the tabfm benchmarks),
``seconds`` / ``cpu_seconds`` the wall / process CPU time of the generation alone. A failed request
is answered with ``{"error": "..."}``; ``{"quit": true}``, an empty line or end of input stops the
worker. Only protocol lines go to stdout (anything dagzoo prints is sent to stderr).

The configuration mirrors the tabfm / TabICL graph-prior settings: 1024 rows per dataset (dagzoo's
default 768 train + 256 test split, what ``dagzoo generate --rows 1024`` resolves to), 2..100
features, 2..10 classes, classification; every other field keeps dagzoo's default.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

# One thread for every math library, before torch is imported (the benchmark also sets these).
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROWS = 1024
N_TEST = 256  # dagzoo's default test split; n_train = ROWS - N_TEST = 768 (dagzoo's default too)
DATASET = {
    "task": "classification",
    "n_train": ROWS - N_TEST,
    "n_test": N_TEST,
    "n_features_min": 2,
    "n_features_max": 100,
    "n_classes_min": 2,
    "n_classes_max": 10,
}
DEVICE = "cpu"


def build_config():
    from dagzoo import GeneratorConfig

    return GeneratorConfig.from_dict({"dataset": dict(DATASET), "runtime": {"device": DEVICE}})


def generate(config, seed: int, n: int) -> dict:
    """Generates ``n`` datasets (fully materialised tensors) and returns their counts and times."""
    import torch
    from dagzoo import generate_batch_iter

    datasets = cells = d_sum = 0
    d_min = rows_min = classes_min = sys.maxsize
    d_max = rows_max = classes_max = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    for bundle in generate_batch_iter(config, num_datasets=n, seed=seed, device=DEVICE):
        x_train, x_test = bundle.X_train, bundle.X_test
        for t in (x_train, x_test, bundle.y_train, bundle.y_test):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"dagzoo returned {type(t).__name__}, expected a torch.Tensor")
        rows = int(x_train.shape[0]) + int(x_test.shape[0])
        d = int(x_train.shape[1])
        datasets += 1
        cells += rows * d
        d_sum += d
        d_min, d_max = min(d_min, d), max(d_max, d)
        rows_min, rows_max = min(rows_min, rows), max(rows_max, rows)
        classes = int(bundle.metadata.get("n_classes") or 0)
        classes_min, classes_max = min(classes_min, classes), max(classes_max, classes)
    seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - cpu0
    return {
        "datasets": datasets,
        "cells": cells,
        "d_sum": d_sum,
        "d_min": d_min if datasets else None,
        "d_max": d_max if datasets else None,
        "rows_min": rows_min if datasets else None,
        "rows_max": rows_max if datasets else None,
        "classes_min": classes_min if datasets else None,
        "classes_max": classes_max if datasets else None,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
    }


def main() -> int:
    # Protocol lines go to a private copy of stdout; fd 1 then points at stderr, so stray prints
    # from dagzoo or torch cannot corrupt the protocol.
    proto = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    def reply(obj: dict) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    try:
        from importlib.metadata import version

        import torch

        torch.set_num_threads(1)
        config = build_config()
        reply(
            {
                "ready": True,
                "dagzoo": version("dagzoo"),
                "torch": torch.__version__,
                "python": sys.version.split()[0],
                "torch_threads": torch.get_num_threads(),
                "dataset": dict(DATASET),
                "graph": {"n_nodes_min": config.graph.n_nodes_min, "n_nodes_max": config.graph.n_nodes_max},
                "layout_mode": str(config.runtime.layout_mode),
                "device": DEVICE,
            }
        )
    except Exception:
        reply({"ready": False, "error": traceback.format_exc()})
        return 1

    for line in sys.stdin:
        line = line.strip()
        if not line:
            break
        try:
            request = json.loads(line)
            if request.get("quit"):
                break
            reply(generate(config, int(request["seed"]), int(request["n"])))
        except Exception:
            reply({"error": traceback.format_exc()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
