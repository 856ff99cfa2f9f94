"""Prior quality, side by side: the same tiny in-context model, same steps, seeds and settings,
pretrained once on tabfm's mix_scm and once on TabICL 2.2.0's mix_scm; then both classifiers on
the real-data suite (ROC-AUC, accuracy, log-loss per dataset).

    .venv/bin/python benches/prior_quality.py --steps 300 --out bench-results/prior_quality

TabICL's batches are generated first (``--workers`` processes, cached under ``--out``), so both
runs train on data that is already there and the comparison is of the data, not its speed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tabfm.classifier import TabFMClassifier, load_model
from tabfm.evaluation import evaluate, format_table, summarise
from tabfm.train import StagedData, StageSpec, TrainConfig, Trainer
from tabfm.train.pretrain import build_data, build_model
from tabfm.train.tasks import ICLTask

ROOT = Path(__file__).resolve().parents[1]


def tabicl_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    stage, prior = cfg.data.stages[0], cfg.data.prior
    return {
        "batch_size": stage.batch_size,
        "batch_size_per_gp": prior.get("batch_size_per_gp", 4),
        "prior_type": "mix_scm",
        "min_features": prior.get("min_features", 2),
        "max_features": prior["max_features"],
        "max_classes": prior.get("max_classes", 10),
        "max_seq_len": stage.max_seq_len,
        "min_train_size": stage.min_train_size,
        "max_train_size": stage.max_train_size,
        "n_jobs": 1,
    }


def _tabicl_worker(args: tuple[int, int, dict[str, Any]]) -> list[tuple[torch.Tensor, ...]]:
    seed, count, kwargs = args
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    from tabicl.prior import PriorDataset as TabICLPrior

    torch.manual_seed(seed)  # TabICL draws from the global generators
    np.random.seed(seed)
    random.seed(seed)
    ds = TabICLPrior(**kwargs)
    return [tuple(t.clone() for t in ds.get_batch()[:5]) for _ in range(count)]


def tabicl_batches(cfg: TrainConfig, steps: int, workers: int, cache: Path) -> list[tuple[torch.Tensor, ...]]:
    kwargs = tabicl_kwargs(cfg)
    key = json.dumps({"steps": steps, **kwargs}, sort_keys=True)
    if cache.is_file():
        saved = torch.load(cache, weights_only=True)
        if saved["key"] == key:
            return [tuple(b) for b in saved["batches"]]
    per = [steps // workers + (w < steps % workers) for w in range(workers)]
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(workers) as pool:
        parts = pool.map(_tabicl_worker, [(1000 + w, n, kwargs) for w, n in enumerate(per)])
    batches = [b for part in parts for b in part]
    print(f"TabICL: {steps} batches in {time.perf_counter() - t0:.0f} s with {workers} processes")
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"key": key, "batches": [list(b) for b in batches]}, cache)
    return batches


class ListLoader:
    """Pre-generated batches, with the loader state contract of the trainer."""

    def __init__(self, batches: list[tuple[torch.Tensor, ...]]):
        self.batches, self.position = batches, 0

    def __iter__(self):
        while self.position < len(self.batches):
            self.position += 1
            yield self.batches[self.position - 1]

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = state["position"]


def train(cfg: TrainConfig, data: StagedData, out: Path) -> dict[str, Any]:
    torch.manual_seed(cfg.train.seed)  # the same initial weights for both priors
    model = build_model(cfg)
    info = {"family": "icl", "config": model.config.to_dict(), "max_features": cfg.data.prior["max_features"]}
    cfg.train.checkpoint_dir = str(out)
    trainer = Trainer(model, ICLTask(model.config.max_classes), cfg, data, model_info=info)
    t0 = time.perf_counter()
    result = trainer.fit()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    return {**result, "train_s": time.perf_counter() - t0, "first_loss": losses[0], "last_loss": losses[-1]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "icl-tiny.yaml"))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--workers", type=int, default=2, help="processes generating TabICL's batches")
    p.add_argument("--splits", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "bench-results" / "prior_quality"))
    args = p.parse_args()
    out = Path(args.out)
    sets = [
        "data.prior.prior_type=mix_scm",  # both runs on mix_scm: the comparison is of the two mix_scm priors
        "data.prior.graph_config=null",
        "train.torch_threads=null",
        f"data.stages.0.steps={args.steps}",
        "data.val_batches=0",
        "train.max_minutes=null",
        "train.tensorboard=false",
        "train.log_every=50",
        f"train.checkpoint_every={args.steps}",
        "train.resume=false",
    ]
    results: dict[str, Any] = {"steps": args.steps}
    cfg = TrainConfig.load(args.config, sets)
    batches = tabicl_batches(cfg, args.steps, args.workers, out / "tabicl_batches.pt")
    runs = {
        "tabfm": (cfg, build_data(cfg)),
        "tabicl": (
            TrainConfig.load(args.config, sets),
            StagedData([StageSpec(args.steps, lambda: ListLoader(batches), cfg.train.micro_batch_size)]),
        ),
    }
    models = {}
    for name, (c, data) in runs.items():
        run_dir = out / name
        for f in run_dir.glob("*"):
            if f.is_file():
                f.unlink()
        results[name] = train(c, data, run_dir)
        model = load_model(run_dir)
        models[f"{name}-prior"] = lambda model=model: TabFMClassifier(model=model, n_estimators=4)
    table = evaluate(models, n_splits=args.splits, seed=0)
    summary = summarise(table)
    print(format_table(summary))
    table.to_csv(out / "results.csv", index=False)
    summary.to_csv(out / "summary.csv")
    results["summary"] = json.loads(summary.reset_index().to_json(orient="records"))
    (out / "prior_quality.json").write_text(json.dumps(results, indent=1))
    print(json.dumps({k: v for k, v in results.items() if k != "summary"}, indent=1))


if __name__ == "__main__":
    main()
