"""The training engine: resume bit for bit, checkpoints, schedules, parameter groups, micro-batch
accumulation, OOM skipping, hooks, AMP, configuration errors and DDP with two processes."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tabfm.models import ICLConfig, TabICLModel
from tabfm.train import (
    FunctionHook,
    Hook,
    OptimSection,
    Schedule,
    TrainConfig,
    ValidationHook,
    load_checkpoint,
    param_groups,
)
from tabfm.train.pretrain import build_trainer

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "icl-tiny.yaml"


# The engine's tests draw from the cheapest SCM prior; the tiny config's graph prior with its
# learnability filter is for real pretraining.
FAST_PRIOR = ("data.prior.prior_type=mix_scm", "data.prior.graph_config=null", "train.torch_threads=null")


def small(tmp: Path | None, steps: int = 20, *extra: str) -> TrainConfig:
    sets = [
        *FAST_PRIOR,
        f"data.stages.0.steps={steps}",
        "data.stages.0.batch_size=8",
        "data.stages.0.max_seq_len=48",
        "data.prior.max_features=8",
        "data.val_batches=0",
        "train.micro_batch_size=4",
        "train.log_every=5",
        "train.checkpoint_every=5",
        "train.tensorboard=false",
        "train.max_minutes=null",
        f"train.checkpoint_dir={tmp if tmp is not None else 'null'}",
        *extra,
    ]
    return TrainConfig.load(TINY, sets)


def digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def stop_at(step: int) -> FunctionHook:
    return FunctionHook(lambda tr: tr.request_stop("test interruption") if tr.step == step else None)


# ------------------------------------------------------------------ resume


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_is_bit_identical(tmp_path, workers):
    extra = (f"data.num_workers={workers}", "data.val_batches=2", "train.val_every=5")
    straight = build_trainer(small(tmp_path / "a", 20, *extra), hooks=[stop_at(-1)])
    straight.fit()
    first = build_trainer(small(tmp_path / "b", 20, *extra), hooks=[stop_at(10)])
    out = first.fit()
    assert out["step"] == 10 and out["stop_reason"] == "test interruption"
    assert digest(first.raw_model) != digest(straight.raw_model)
    second = build_trainer(small(tmp_path / "b", 20, *extra), hooks=[stop_at(-1)])
    out = second.fit()
    assert out["step"] == 20
    assert digest(second.raw_model) == digest(straight.raw_model)
    # optimiser moments too, not only the weights
    sa, sb = straight.optimizer.state_dict()["state"], second.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"]) for k in sa)


def test_checkpoint_loads_weights_only_and_is_pruned(tmp_path):
    trainer = build_trainer(small(tmp_path, 12, "train.keep_checkpoints=2"))
    trainer.fit()
    files = sorted(p.name for p in tmp_path.glob("step-*.ckpt"))
    assert files == ["step-00000010.ckpt", "step-00000012.ckpt"]  # kept 2, plus the final state
    state = torch.load(tmp_path / files[-1], weights_only=True)
    assert state["step"] == 12 and state["data"]["loader"]["position"] == 12
    assert set(state) >= {"model", "optimizer", "scaler", "rng", "config", "model_info", "hooks"}
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind
    assert load_checkpoint(tmp_path / files[-1])["model_info"]["family"] == "icl"
    with pytest.raises(ValueError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_resume_refuses_another_world_size(tmp_path):
    trainer = build_trainer(small(tmp_path, 5))
    trainer.fit()
    state = load_checkpoint(tmp_path / "step-00000005.ckpt")
    state["world_size"] = 2
    with pytest.raises(ValueError, match="world_size=2"):
        build_trainer(small(None, 5)).load_state_dict(state)


# ------------------------------------------------------------------ optimiser and schedules


def test_param_groups_skip_biases_norms_and_tokens():
    model = TabICLModel(ICLConfig.preset("tiny"))
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    no = {names[id(p)] for p in no_decay["params"]}
    yes = {names[id(p)] for p in decay["params"]}
    assert "row_interaction.cls" in no and "icl.label_embedding.weight" in no
    assert any(n.endswith("inducing") for n in no)
    assert all(n.endswith(".bias") or "norm" in n or n in no for n in no)
    assert "icl.decoder.0.weight" in yes and not any(n.endswith(".bias") for n in yes)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert len(yes) + len(no) == len(list(model.parameters()))


def _lrs(total: int = 100, **kw) -> list[float]:
    s = Schedule(OptimSection(lr=1.0, **kw), total)
    return [s.lr(i) for i in range(total)]


def test_schedules():
    lrs = _lrs(schedule="warmup_cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert max(lrs) == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))
    one = _lrs(schedule="onecycle", warmup_steps=30, onecycle_div=25, onecycle_final_div=1e4)
    assert one[0] == pytest.approx(1 / 25) and one[30] == pytest.approx(1.0)
    assert one[-1] == pytest.approx(1 / 25 / 1e4, rel=0.05)
    poly = _lrs(schedule="polynomial", warmup_steps=0, power=2.0, min_lr_ratio=0.0)
    assert poly[50] == pytest.approx((1 - 50 / 99) ** 2) and poly[-1] == 0.0
    assert _lrs(schedule="constant") == [1.0] * 100
    s = Schedule(OptimSection(weight_decay=0.04, weight_decay_end=0.4, weight_decay_schedule="cosine"), 101)
    assert s.weight_decay(0) == pytest.approx(0.04) and s.weight_decay(100) == pytest.approx(0.4)
    assert s.weight_decay(50) == pytest.approx(0.22)


def test_weight_decay_schedule_reaches_only_decayed_groups():
    model = TabICLModel(ICLConfig.preset("tiny"))
    opt = torch.optim.AdamW(param_groups(model, 0.05))
    s = Schedule(OptimSection(weight_decay=0.05, weight_decay_end=0.5, weight_decay_schedule="cosine"), 11)
    s.apply(opt, 10)
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(0.5)
    assert opt.param_groups[1]["weight_decay"] == 0.0


# ------------------------------------------------------------------ the step


def test_micro_batches_accumulate_to_the_full_batch_gradient():
    grads = []
    for mbs in (8, 2):
        trainer = build_trainer(small(None, 1, f"train.micro_batch_size={mbs}"))
        batch = trainer.data.next_batch(0)[0]
        trainer.optimizer.zero_grad()
        for micro, w in trainer.task.micro_batches(batch, mbs, trainer.device):
            loss, _ = trainer.task.loss(trainer.model, micro)
            (loss * w).backward()
        grads.append(
            torch.cat([p.grad.flatten() for p in trainer.raw_model.parameters() if p.grad is not None])
        )
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


class OOMTask:
    """Wraps the ICL task; raises CUDA's out-of-memory error on chosen micro-batches."""

    def __init__(self, task, fail_every: int):
        self.task, self.fail_every, self.calls = task, fail_every, 0

    def batch_datasets(self, batch):
        return self.task.batch_datasets(batch)

    def micro_batches(self, *a):
        return self.task.micro_batches(*a)

    def loss(self, model, micro):
        self.calls += 1
        if self.calls % self.fail_every == 0:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.task.loss(model, micro)


def test_out_of_memory_micro_batch_is_skipped_and_counted():
    trainer = build_trainer(small(None, 10, "train.max_oom_fraction=0.2"))
    trainer.task = OOMTask(trainer.task, fail_every=7)
    out = trainer.fit()
    assert out["step"] == 10 and out["micro_batches"] == 20 and out["skipped_oom"] == 2
    trainer = build_trainer(small(None, 10, "train.max_oom_fraction=0.2"))
    trainer.task = OOMTask(trainer.task, fail_every=2)
    with pytest.raises(RuntimeError, match="ran out of memory"):
        trainer.fit()


def test_other_errors_are_not_swallowed():
    trainer = build_trainer(small(None, 3))

    class Broken(OOMTask):
        def loss(self, model, micro):
            raise RuntimeError("shape mismatch")

    trainer.task = Broken(trainer.task, 1)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        trainer.fit()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_amp_steps_on_cpu(dtype):
    trainer = build_trainer(small(None, 4, "train.amp=true", f"train.amp_dtype={dtype}"))
    out = trainer.fit()
    assert out["step"] == 4
    assert trainer.scaler.is_enabled() == (dtype == "float16")
    assert all(torch.isfinite(p).all() for p in trainer.raw_model.parameters())


def test_loss_falls_on_the_prior(tmp_path):
    trainer = build_trainer(small(tmp_path, 60, "optim.lr=3e-3", "train.log_every=10"))
    trainer.fit()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert len(losses) == 6
    assert losses[-1] < losses[0] - 0.2, losses
    assert all(0 <= r["train/data_wait_share"] <= 1 and r["train/datasets_per_s"] > 0 for r in rows)


# ------------------------------------------------------------------ hooks and validation


def test_hooks_fire_on_steps_and_epochs():
    events: list[tuple[str, int]] = []

    class Recorder(Hook):
        def setup(self, tr):
            events.append(("setup", tr.step))

        def hook(self, tr):
            events.append((self.trigger, tr.step))

        def cleanup(self, tr):
            events.append(("cleanup", tr.step))

    trainer = build_trainer(
        small(None, 12, "train.steps_per_epoch=4"),
        hooks=[Recorder(each=5), Recorder(each=2, trigger="epoch")],
    )
    trainer.fit()
    assert events.count(("setup", 0)) == 2 and events.count(("cleanup", 12)) == 2
    assert [s for t, s in events if t == "step"] == [5, 10]
    assert [s for t, s in events if t == "epoch"] == [8]  # epochs 1, 2, 3 end at 4, 8, 12; each=2
    with pytest.raises(ValueError, match="trigger='batch'"):
        Hook(trigger="batch")
    with pytest.raises(ValueError, match="each=0"):
        Hook(each=0)


def test_validation_early_stopping_and_best_checkpoint(tmp_path):
    # min_delta above any possible gain: nothing after the first validation counts as better
    cfg = small(tmp_path, 40, "data.val_batches=2", "train.val_every=1000")
    trainer = build_trainer(cfg, hooks=[ValidationHook(each=5, patience=2, min_delta=10.0)])
    out = trainer.fit()
    assert out["step"] == 15 and "early stopping" in out["stop_reason"]
    assert (tmp_path / "best.ckpt").is_file()
    best = load_checkpoint(tmp_path / "best.ckpt")
    assert best["step"] == 5
    val = trainer.hooks[1]
    assert isinstance(val, ValidationHook) and [h["step"] for h in val.history] == [5, 10, 15]
    assert math.isfinite(val.best) and 0 <= val.history[0]["accuracy"] <= 1


def test_curriculum_stages_change_the_data(tmp_path):
    cfg = small(tmp_path, 4)
    cfg.data.stages.append(type(cfg.data.stages[0])(steps=3, batch_size=4, max_seq_len=32))
    trainer = build_trainer(cfg)
    seen = []
    trainer.hooks.append(FunctionHook(lambda tr: seen.append((tr.data.stage, tr.data.spec.steps))))
    out = trainer.fit()
    assert out["step"] == 7 and out["datasets"] == 4 * 8 + 3 * 4
    assert seen == [(0, 4)] * 4 + [(1, 3)] * 3


# ------------------------------------------------------------------ configuration errors

BAD = [
    ("optim.lr=-1", "optim.lr=-1 is invalid"),
    ("optim.schedule=cyclic", "optim.schedule='cyclic' is invalid"),
    ("optim.betas=[0.9]", r"optim.betas=\[0.9\] is invalid"),
    ("optim.weight_decay_schedule=linear", "optim.weight_decay_schedule='linear'"),
    ("optim.warmup_fraction=1.5", "optim.warmup_fraction=1.5"),
    ("train.micro_batch_size=0", "train.micro_batch_size=0"),
    ("train.amp_dtype=float8", "train.amp_dtype='float8'"),
    ("train.grad_clip=0", "train.grad_clip=0"),
    ("train.device=tpu", "train.device='tpu'"),
    ("train.checkpoint_every=0", "train.checkpoint_every=0"),
    ("train.colour=red", "train: unknown field"),
    ("data.stages.0.steps=0", r"data.stages\[0\].steps=0"),
    ("data.stages.0.batch_size=two", r"data.stages\[0\].batch_size='two'"),
    ("data.stages=[]", r"data.stages=\[\] is invalid"),
    ("data.prior.max_seq_len=10", "per-stage settings"),
    ("data.num_workers=-1", "data.num_workers=-1"),
    ("model.embed_dim=30", "model.row_heads=2 is invalid"),
    ("model.preset=huge", "model preset='huge'"),
    ("model.colour=red", "model: unknown field"),
    ("extra.key=1", "unknown section"),
]


@pytest.mark.parametrize(("override", "message"), BAD)
def test_bad_configuration(override, message):
    with pytest.raises((ValueError, TypeError), match=message):
        cfg = TrainConfig.load(TINY, [override])
        build_trainer(cfg)


def test_numbers_in_exponent_notation_are_numbers():
    # YAML 1.1 reads 3e-4 as a string; the config accepts it as the float users mean.
    cfg = TrainConfig.load(TINY, ["optim.lr=3e-4", "train.grad_clip=1e1"])
    assert cfg.optim.lr == 3e-4 and cfg.train.grad_clip == 10.0


def test_bad_prior_settings_fail_before_training():
    with pytest.raises(ValueError, match="max_classes=12"):
        build_trainer(TrainConfig.load(TINY, ["data.prior.max_classes=12"]))
    with pytest.raises(ValueError, match="max_features"):
        build_trainer(TrainConfig.load(TINY, ["data.prior.max_features=0"]))
    with pytest.raises(ValueError, match="expected key=value"):
        TrainConfig.load(TINY, ["optim.lr"])


# ------------------------------------------------------------------ DDP (two processes, gloo)

DDP_SCRIPT = """
import hashlib, json, os, sys, torch
from tabfm.train import FunctionHook, TrainConfig
from tabfm.train.pretrain import build_trainer
stop = int(os.environ["STOP_AT"])
cfg = TrainConfig.load(sys.argv[1], sys.argv[3:])
tr = build_trainer(cfg, hooks=[FunctionHook(lambda t: t.request_stop("test") if t.step == stop else None)])
if tr.rank == int(os.environ.get("OOM_RANK", "-1")):
    class LastMicroOOM:  # runs out of memory in the forward of every other step's last micro-batch
        def __init__(self, task):
            self.task, self.steps, self.n, self.i = task, 0, 0, 0
        def batch_datasets(self, batch):
            return self.task.batch_datasets(batch)
        def micro_batches(self, *a):
            out = self.task.micro_batches(*a)
            self.n, self.i = len(out), 0
            return out
        def loss(self, model, micro):
            if not model.training:  # validation
                return self.task.loss(model, micro)
            self.i += 1
            self.steps += self.i == 1
            if self.i == self.n and self.steps % 2 == 0:
                if os.environ["OOM_IN"] == "forward":
                    raise torch.OutOfMemoryError("CUDA out of memory (injected)")
                loss, stats = self.task.loss(model, micro)
                return OOMInBackward.apply(loss), stats
            return self.task.loss(model, micro)
    class OOMInBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()
        @staticmethod
        def backward(ctx, g):
            raise torch.OutOfMemoryError("CUDA out of memory (injected in backward)")
    tr.task = LastMicroOOM(tr.task)
out = tr.fit()
h = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in tr.raw_model.parameters())).hexdigest()
json.dump({"digest": h, "out": out, "rank": tr.rank, "world": tr.world}, open(f"{sys.argv[2]}/rank{tr.rank}.json", "w"))
"""


def _torchrun(
    tmp_path: Path, ckpt: Path, stop_at: int = -1, *extra: str, oom_rank: int = -1, oom_in: str = "forward"
) -> list[dict] | str:
    """Two ranks under torchrun; each rank's result, or (when a rank fails) torchrun's stderr."""
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    sets = [
        *FAST_PRIOR,
        "data.stages.0.batch_size=8",
        "data.stages.0.max_seq_len=48",
        "data.prior.max_features=8",
        "data.val_batches=2",
        "train.val_every=3",
        "train.micro_batch_size=2",
        "train.tensorboard=false",
        "train.max_minutes=null",
        "train.checkpoint_every=3",
        f"train.checkpoint_dir={ckpt}",
        "data.stages.0.steps=9",
        *extra,
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "STOP_AT": str(stop_at),
        "OOM_RANK": str(oom_rank),
        "OOM_IN": oom_in,
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    proc = subprocess.run(
        [*cmd, str(TINY), str(tmp_path), *sets], env=env, capture_output=True, text=True, timeout=240
    )  # a rank left waiting in an all-reduce shows as this timeout
    if proc.returncode != 0:
        return proc.stderr
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_ddp_two_processes_gloo(tmp_path):
    ranks = _torchrun(tmp_path, tmp_path / "run", stop_at=6)
    assert not isinstance(ranks, str), ranks[-3000:]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["digest"] == ranks[1]["digest"]  # gradients all-reduced: replicas stay equal
    assert ranks[0]["out"]["step"] == 6 and ranks[0]["out"]["datasets"] == 6 * 8  # 4 of 8 per rank
    state = load_checkpoint(tmp_path / "run" / "step-00000006.ckpt")
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    # resuming under DDP continues to the same weights as a straight run
    straight = _torchrun(tmp_path, tmp_path / "straight")
    resumed = _torchrun(tmp_path, tmp_path / "run")
    assert not isinstance(straight, str) and not isinstance(resumed, str), (straight, resumed)
    assert resumed[0]["out"]["step"] == 9
    assert resumed[0]["digest"] == straight[0]["digest"] == resumed[1]["digest"]


def test_ddp_rank_that_skips_the_synchronising_micro_batch_does_not_hang(tmp_path):
    # Rank 0 runs out of memory on the last micro-batch (the one whose backward all-reduces the
    # gradients) of every other step; it still joins the all-reduce, so training finishes and the
    # replicas stay equal.
    ranks = _torchrun(tmp_path, tmp_path / "run", -1, "train.max_oom_fraction=0.5", oom_rank=0)
    assert not isinstance(ranks, str), ranks[-3000:]
    assert ranks[0]["out"]["step"] == ranks[1]["out"]["step"] == 9
    assert ranks[0]["out"]["skipped_oom"] == 4 and ranks[1]["out"]["skipped_oom"] == 0
    assert ranks[0]["digest"] == ranks[1]["digest"]
    # In the backward pass the all-reduce may have begun: that is an error naming the way out.
    err = _torchrun(
        tmp_path, tmp_path / "run2", -1, "train.max_oom_fraction=0.5", oom_rank=0, oom_in="backward"
    )
    assert isinstance(err, str) and "DDP cannot recover" in err and "train.micro_batch_size" in err


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    from tabfm.train.pretrain import build_data, build_model

    cfg = TrainConfig.load(path)
    data = build_data(cfg)  # constructs every stage's PriorDataset: the prior checks its settings
    assert data.total_steps == cfg.total_steps > 0
    assert build_model(cfg).config.max_classes >= cfg.data.prior["max_classes"]
