"""Shared fixtures: a briefly pretrained tiny in-context model."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A run directory of the tiny model after 40 steps on mix_scm (a few seconds): for the
    mechanics of loading and predicting, not for accuracy (the bundled model is for that)."""
    from tabfm.train import TrainConfig
    from tabfm.train.pretrain import pretrain

    out = tmp_path_factory.mktemp("tiny-run")
    cfg = TrainConfig.load(
        ROOT / "configs" / "icl-tiny.yaml",
        [
            "data.prior.prior_type=mix_scm",
            "data.prior.graph_config=null",
            "data.stages.0.steps=40",
            "data.stages.0.batch_size=16",
            "data.stages.0.max_seq_len=128",
            "data.val_batches=0",
            "data.num_workers=0",
            "optim.lr=3e-3",
            "train.torch_threads=null",
            "train.log_every=1000",
            "train.max_minutes=null",
            "train.tensorboard=false",
            "train.checkpoint_every=1000",
            f"train.checkpoint_dir={out}",
        ],
    )
    pretrain(cfg)
    return out
