"""Pretraining the in-context model on the prior (``tabfm pretrain --config FILE``).

The data of stage ``i`` is a :class:`~tabfm.prior.PriorDataset` with ``data.prior`` merged with
the stage's settings and seed ``data.prior.seed + i`` (so stages never replay each other's
batches), or a corpus directory (``data.corpus``). Under torchrun the global ``batch_size`` is
split across ranks (``ceil(batch_size / world_size)`` each) and each rank draws its own batches.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterator
from typing import Any

from tabfm.models import ICLConfig, TabICLModel
from tabfm.prior import PriorDataLoader, PriorDataset
from tabfm.train._config import Stage, TrainConfig
from tabfm.train._data import StagedData, StageSpec
from tabfm.train._hooks import Hook, ValidationHook
from tabfm.train._trainer import Trainer
from tabfm.train.tasks import ICLTask


def _world() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def _rank_batch_size(stage: Stage) -> int:
    return math.ceil(stage.batch_size / _world())


def prior_kwargs(cfg: TrainConfig, stage: Stage, index: int) -> dict[str, Any]:
    kw = dict(cfg.data.prior)
    kw.setdefault("max_classes", 10)
    kw["seed"] = int(kw.get("seed", cfg.train.seed)) + index
    for f in dataclasses.fields(Stage):
        if f.name not in ("steps", "micro_batch_size"):
            kw[f.name] = getattr(stage, f.name)
    kw["batch_size"] = _rank_batch_size(stage)
    return kw


def build_data(cfg: TrainConfig) -> StagedData:
    specs = []
    for i, stage in enumerate(cfg.data.stages):
        mbs = stage.micro_batch_size or cfg.train.micro_batch_size
        if cfg.data.corpus is not None:
            from tabfm.corpus import ShardDataset

            def make(stage=stage):
                ds = ShardDataset(cfg.data.corpus, _rank_batch_size(stage))
                return PriorDataLoader(ds, num_workers=cfg.data.num_workers)

        else:
            kw = prior_kwargs(cfg, stage, i)
            PriorDataset(**kw)  # validates this stage's settings before any training starts

            def make(kw=kw):
                return PriorDataLoader(PriorDataset(**kw), num_workers=cfg.data.num_workers)

        specs.append(StageSpec(stage.steps, make, mbs))
    return StagedData(specs)


def build_val_data(cfg: TrainConfig) -> Callable[[], Iterator[Any]] | None:
    """Held-out prior batches (seed ``data.val_seed``, the last stage's settings); each rank
    validates its own share of them."""
    if cfg.data.val_batches == 0:
        return None
    kw = prior_kwargs(cfg, cfg.data.stages[-1], 0)
    kw["seed"] = cfg.data.val_seed
    ds = PriorDataset(**kw)
    _, world = ds._shard()
    n = math.ceil(cfg.data.val_batches / world)
    return lambda: (ds.get_batch(ds.global_index(k)) for k in range(n))


def build_model(cfg: TrainConfig) -> TabICLModel:
    mcfg = ICLConfig.from_dict(cfg.model)
    prior_classes = cfg.data.prior.get("max_classes", 10)
    if prior_classes > mcfg.max_classes:
        raise ValueError(
            f"data.prior.max_classes={prior_classes} is invalid: the model predicts at most "
            f"model.max_classes={mcfg.max_classes} classes"
        )
    return TabICLModel(mcfg)


def build_trainer(cfg: TrainConfig, hooks: list[Hook] | None = None) -> Trainer:
    import torch

    if cfg.data.prior.get("regression"):
        raise ValueError("data.prior.regression=True is invalid: the in-context model here is a classifier")
    data = build_data(cfg)
    val = build_val_data(cfg)
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    model = build_model(cfg)
    all_hooks = list(hooks or [])
    if val is not None:
        all_hooks.insert(0, ValidationHook(each=cfg.train.val_every, patience=cfg.train.patience))
    info = {
        "family": "icl",
        "config": model.config.to_dict(),
        "parameters": model.num_parameters(),
        "max_features": int(cfg.data.prior.get("max_features", 100)),  # widest table seen in training
    }
    return Trainer(model, ICLTask(model.config.max_classes), cfg, data, val, all_hooks, model_info=info)


def pretrain(cfg: TrainConfig, hooks: list[Hook] | None = None) -> dict[str, Any]:
    trainer = build_trainer(cfg, hooks)
    trainer.log.message(
        f"tabfm pretrain: {trainer.model_info['parameters']:,} parameters, {cfg.total_steps} steps, "
        f"world size {trainer.world}, device {trainer.device}"
    )
    return trainer.fit()
