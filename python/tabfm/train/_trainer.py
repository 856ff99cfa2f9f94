"""The one training loop of tabfm, for every model family.

A model family brings a *task* (how to cut a batch into micro-batches and the loss of one; see
:class:`tabfm.train.tasks.ICLTask`); the trainer brings everything else:

- DDP under torchrun (NCCL on GPU, gloo on CPU); each rank draws its own share of the data;
- AMP autocast in bfloat16 or float16 (with a GradScaler for float16);
- gradient accumulation over micro-batches, gradients all-reduced on the last one only;
- gradient clipping, AdamW with parameter groups, lr and weight-decay schedules;
- a micro-batch that runs out of GPU memory is skipped and counted, not fatal;
- hooks (validation with early stopping and save-best, or your own);
- atomic checkpoints every N steps; resume restores model, optimiser, schedule, scaler, data
  position, hook state and every RNG, so a resumed run continues bit for bit;
- logs on stdout, TensorBoard and ``metrics.jsonl``, with the share of time spent waiting for data.

Read :meth:`Trainer.fit` top to bottom: that is the whole loop.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tabfm.train import _checkpoint as ckpt
from tabfm.train._config import TrainConfig
from tabfm.train._data import StagedData
from tabfm.train._hooks import Hook
from tabfm.train._logging import TrainLogger
from tabfm.train._optim import Schedule, build_optimizer


def setup_distributed(device: str = "auto") -> tuple[int, int, torch.device]:
    """Joins the process group when launched by torchrun; returns (rank, world size, device)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return rank, world, dev


def _first_dataset(micro: Any) -> Any:
    """A micro-batch cut to its first dataset: every tensor in it sliced along dimension 0."""
    if torch.is_tensor(micro):
        return micro[:1]
    if isinstance(micro, dict):
        return {k: _first_dataset(v) for k, v in micro.items()}
    if isinstance(micro, (tuple, list)):
        return type(micro)(_first_dataset(v) for v in micro)
    return micro


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and "out of memory" in str(e).lower()
    )


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        task: Any,
        config: TrainConfig,
        data: StagedData,
        val_data: Any = None,
        hooks: list[Hook] | tuple[Hook, ...] = (),
        model_info: dict[str, Any] | None = None,
    ):
        self.config = config
        t = config.train
        if t.torch_threads is not None:
            torch.set_num_threads(t.torch_threads)
        self.rank, self.world, self.device = setup_distributed(t.device)
        self.is_main = self.rank == 0
        self.task, self.data, self.val_data = task, data, val_data
        self.total_steps = data.total_steps
        self.model_info = model_info or {}

        self.raw_model = model.to(self.device)
        self.model: nn.Module = (
            DistributedDataParallel(self.raw_model, broadcast_buffers=False)
            if self.world > 1
            else self.raw_model
        )
        self.optimizer = build_optimizer(self.raw_model, config.optim)
        self.schedule = Schedule(config.optim, self.total_steps)
        amp_dtype = torch.float16 if t.amp_dtype == "float16" else torch.bfloat16
        self.autocast = (
            (lambda: torch.autocast(self.device.type, dtype=amp_dtype)) if t.amp else contextlib.nullcontext
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=t.amp and amp_dtype == torch.float16)

        self.hooks = list(hooks)
        self.checkpoint_dir = Path(t.checkpoint_dir) if t.checkpoint_dir else None
        self.log = TrainLogger(self.checkpoint_dir, self.total_steps, self.is_main, t.tensorboard, t.progress)
        self.step = 0
        self.epoch = 0
        self.counters = {"datasets": 0, "micro_batches": 0, "skipped_oom": 0, "nonfinite_steps": 0}
        self.stop_reason: str | None = None
        self._stop_requested: str | None = None

    # ================================================================== the loop
    def fit(self) -> dict[str, Any]:
        t = self.config.train
        self._maybe_resume()
        for h in self.hooks:
            h.setup(self)
        start = time.perf_counter()
        window = _Window()
        try:
            while self.step < self.total_steps and self.stop_reason is None:
                t0 = time.perf_counter()
                batch, epoch_ended = self.data.next_batch(self.step)
                if epoch_ended:
                    self._end_epoch()
                t1 = time.perf_counter()
                metrics = self.train_step(batch)
                self.step += 1
                window.add(metrics, wait=t1 - t0, total=time.perf_counter() - t0)

                if self.step % t.log_every == 0 or self.step == self.total_steps:
                    self.log.train_line(self.step, window.summary(self))
                    window = _Window()
                self.log.tick(self.step)
                self._run_hooks("step", self.step)
                if t.steps_per_epoch is not None and self.step % t.steps_per_epoch == 0:
                    self._end_epoch()
                if self.checkpoint_dir is not None and self.step % t.checkpoint_every == 0:
                    self.save_checkpoint()
                self._check_stop(start)
        finally:
            for h in self.hooks:
                h.cleanup(self)
        if self.checkpoint_dir is not None and self.step % t.checkpoint_every != 0:
            self.save_checkpoint()  # the final (or interrupted) state, resumable
        self.log.close()
        self.data.close()
        return {"step": self.step, "epoch": self.epoch, "stop_reason": self.stop_reason, **self.counters}

    def train_step(self, batch: Any) -> dict[str, float]:
        """One optimiser step over a batch: accumulate micro-batches, clip, step."""
        t = self.config.train
        lr = self.schedule.apply(self.optimizer, self.step)
        self.optimizer.zero_grad(set_to_none=True)
        micros = self.task.micro_batches(batch, self.data.spec.micro_batch_size, self.device)
        sums: dict[str, float] = {}
        done_weight = 0.0
        ddp = isinstance(self.model, DistributedDataParallel)
        for i, (micro, weight) in enumerate(micros):
            syncs = ddp and i == len(micros) - 1  # gradients are all-reduced once, at the end
            if ddp:
                self.model.require_backward_grad_sync = syncs
            in_backward, loss = False, None
            try:
                with self.autocast():
                    loss, stats = self.task.loss(self.model, micro)
                in_backward = True
                self.scaler.scale(loss * weight).backward()
            except Exception as e:
                if not _is_oom(e):
                    raise
                # Skipped and counted, not fatal (bounded by train.max_oom_fraction); the step
                # goes on with the micro-batches that fit.
                del e, loss  # the failed graph's memory
                self.counters["skipped_oom"] += 1
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if syncs:
                    self._join_gradient_sync(micro, in_backward)
                continue
            done_weight += weight
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + float(v) * weight
        self.counters["micro_batches"] += len(micros)
        self._check_oom_budget()

        self.scaler.unscale_(self.optimizer)
        clip = t.grad_clip if t.grad_clip is not None else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), clip))
        if not math.isfinite(grad_norm) and not self.scaler.is_enabled():
            self.counters["nonfinite_steps"] += 1  # skip the update, as the fp16 scaler would
            self.optimizer.zero_grad(set_to_none=True)
        else:
            self.scaler.step(self.optimizer)
        self.scaler.update()
        n = self.task.batch_datasets(batch)
        self.counters["datasets"] += n * self.world
        out = {k: v / done_weight for k, v in sums.items()} if done_weight > 0 else {}
        out.update(lr=lr, grad_norm=grad_norm, datasets=float(n))
        return out

    def _join_gradient_sync(self, micro: Any, in_backward: bool) -> None:
        """After this rank skipped the micro-batch whose backward all-reduces the gradients, take
        part in that all-reduce anyway, or the other ranks would wait for it forever: a backward
        through DDP of one dataset's loss times zero contributes zero gradients."""
        if in_backward:
            # The all-reduce of some gradient buckets may have started: DDP cannot take it back.
            raise RuntimeError(
                f"rank {self.rank} ran out of memory in the backward pass of the micro-batch that "
                "all-reduces gradients across ranks, which DDP cannot recover from: lower "
                f"train.micro_batch_size (now {self.data.spec.micro_batch_size}) or the stage's max_seq_len"
            )
        shrink = getattr(self.task, "one_dataset", None)
        small = shrink(micro) if shrink is not None else _first_dataset(micro)
        with self.autocast():
            loss, _ = self.task.loss(self.model, small)
        (loss * 0.0).backward()

    # ================================================================== validation
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean task metrics over the validation batches (all ranks together)."""
        if self.val_data is None:
            raise RuntimeError("validate() needs val_data")
        self.raw_model.eval()
        sums: dict[str, float] = {}
        count = 0.0
        # A callable gives a fresh pass each time (an iterator would be spent after one).
        for batch in self.val_data() if callable(self.val_data) else self.val_data:
            for micro, weight in self.task.micro_batches(batch, self.data.spec.micro_batch_size, self.device):
                with self.autocast():
                    _, stats = self.task.loss(self.raw_model, micro)
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * weight
                count += weight
        self.raw_model.train()
        keys = sorted(sums)
        *totals, count = self.sum_over_ranks([sums[k] for k in keys] + [count])
        return {k: totals[i] / count for i, k in enumerate(keys)}

    def sum_over_ranks(self, values: list[float]) -> list[float]:
        """Each value summed over all ranks (a collective under DDP: every rank calls it)."""
        vec = torch.tensor(values, dtype=torch.float64)
        if self.world > 1:
            vec = vec.to(self.device)
            dist.all_reduce(vec)
        return vec.cpu().tolist()

    # ================================================================== checkpoints
    def state_dict(self) -> dict[str, Any]:
        rng = ckpt.rng_state()
        if self.world > 1:  # every rank's generators, so each resumes its own
            gathered: list[Any] = [None] * self.world
            dist.all_gather_object(gathered, rng)
            rng_states = gathered
        else:
            rng_states = [rng]
        return {
            "format": ckpt.FORMAT,
            "step": self.step,
            "epoch": self.epoch,
            "world_size": self.world,
            "config": self.config.to_dict(),
            "model_info": self.model_info,
            "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "data": self.data.state_dict(),
            "rng": rng_states,
            "hooks": [h.state_dict() for h in self.hooks],
            "counters": dict(self.counters),
        }

    def save_checkpoint(self, name: str | None = None) -> Path | None:
        if self.checkpoint_dir is None:
            return None
        state = self.state_dict()  # collective under DDP: every rank takes part
        path = self.checkpoint_dir / (name or f"step-{self.step:08d}.ckpt")
        if self.is_main:
            ckpt.save_atomic(state, path)
            if name is None:
                ckpt.prune(self.checkpoint_dir, self.config.train.keep_checkpoints)
        if self.world > 1:
            dist.barrier()
        return path

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["world_size"] != self.world:
            raise ValueError(
                f"checkpoint world_size={state['world_size']} does not match this run's {self.world}: "
                "data positions are per rank"
            )
        self.raw_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.data.load_state_dict(state["data"])
        ckpt.set_rng_state(state["rng"][self.rank])
        if len(state["hooks"]) != len(self.hooks):
            raise ValueError(
                f"checkpoint has {len(state['hooks'])} hook states, this run {len(self.hooks)} hooks"
            )
        for h, s in zip(self.hooks, state["hooks"], strict=True):
            h.load_state_dict(s)
        self.step, self.epoch = state["step"], state["epoch"]
        self.counters.update(state["counters"])

    def _maybe_resume(self) -> None:
        if self.checkpoint_dir is None or not self.config.train.resume:
            return
        path = ckpt.latest(self.checkpoint_dir)
        if path is None:
            return
        self.load_state_dict(ckpt.load(path, map_location=self.device))
        self.log.message(f"resumed from {path} at step {self.step}")

    # ================================================================== control
    def request_stop(self, reason: str) -> None:
        self._stop_requested = reason

    def _check_stop(self, start: float) -> None:
        t = self.config.train
        local = self._stop_requested
        if local is None and t.max_minutes is not None and time.perf_counter() - start > 60 * t.max_minutes:
            local = f"time budget of {t.max_minutes} min reached"
        if self.world > 1 and (t.max_minutes is not None or self.hooks):
            flag = torch.tensor([local is not None], dtype=torch.int32, device=self.device)
            dist.all_reduce(flag)  # all ranks stop together, or collectives would hang
            if flag.item() and local is None:
                local = "stop requested by another rank"
        if local is not None:
            self.stop_reason = local
            self.log.message(f"stopping at step {self.step}: {local}")

    def _run_hooks(self, trigger: str, count: int) -> None:
        for h in self.hooks:
            if h.due(trigger, count):
                h.hook(self)

    def _end_epoch(self) -> None:
        self.epoch += 1
        self._run_hooks("epoch", self.epoch)

    def _check_oom_budget(self) -> None:
        c = self.counters
        if (
            c["micro_batches"] >= 10
            and c["skipped_oom"] > self.config.train.max_oom_fraction * c["micro_batches"]
        ):
            raise RuntimeError(
                f"{c['skipped_oom']} of {c['micro_batches']} micro-batches ran out of memory "
                f"(more than train.max_oom_fraction={self.config.train.max_oom_fraction}): "
                "lower train.micro_batch_size"
            )


class _Window:
    """Sums over the steps since the last log line."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = 0
        self.wait = 0.0
        self.total = 0.0
        self.datasets = 0.0

    def add(self, metrics: dict[str, float], wait: float, total: float) -> None:
        self.steps += 1
        self.wait += wait
        self.total += total
        self.datasets += metrics.get("datasets", 0.0)
        for k, v in metrics.items():
            if k != "datasets":
                self.sums[k] = self.sums.get(k, 0.0) + v

    def summary(self, trainer: Trainer) -> dict[str, float]:
        keys = sorted(self.sums)
        # means over ranks; throughput of all ranks together
        *sums, datasets, wait, total = trainer.sum_over_ranks(
            [self.sums[k] for k in keys] + [self.datasets, self.wait, self.total]
        )
        w = trainer.world
        out = {f"train/{k}": sums[i] / (self.steps * w) for i, k in enumerate(keys)}
        wait, total = wait / w, total / w
        out["train/datasets_per_s"] = datasets / max(total, 1e-9)
        out["train/data_wait_share"] = wait / max(total, 1e-9)
        return out
