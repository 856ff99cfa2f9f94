"""AdamW with parameter groups, and learning-rate / weight-decay schedules as pure functions of
the step (so a schedule's whole state is the step counter, saved with the checkpoint)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from tabfm.train._config import OptimSection


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only: biases, norms (all 1-D tensors) and the names the model
    lists in ``no_weight_decay()`` (tokens, inducing points, embeddings) are not decayed."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name in skip else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "decay": True},
        {"params": no_decay, "weight_decay": 0.0, "decay": False},
    ]


def build_optimizer(model: nn.Module, cfg: OptimSection, fused: bool = False) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay),
        lr=cfg.lr,
        betas=tuple(cfg.betas),
        eps=cfg.eps,
        fused=fused or None,
    )


class Schedule:
    """Sets each group's ``lr`` and (decayed groups') ``weight_decay`` for a step.

    - ``constant``: ``lr``.
    - ``warmup_cosine``: linear warmup to ``lr``, cosine down to ``lr * min_lr_ratio``.
    - ``onecycle``: cosine up from ``lr / div`` over the warmup, cosine down to ``lr / div / final_div``.
    - ``polynomial``: linear warmup, then ``(1 - progress) ** power`` down to ``lr * min_lr_ratio``.
    - weight decay ``cosine``: from ``weight_decay`` to ``weight_decay_end`` over the run.
    """

    def __init__(self, cfg: OptimSection, total_steps: int):
        self.cfg = cfg
        self.total = max(1, total_steps)
        ws = cfg.warmup_steps if cfg.warmup_steps is not None else round(cfg.warmup_fraction * self.total)
        self.warmup = min(ws, self.total)

    def lr(self, step: int) -> float:
        c, w, n = self.cfg, self.warmup, self.total
        if c.schedule == "constant":
            return c.lr
        if c.schedule == "onecycle":
            start, end = c.lr / c.onecycle_div, c.lr / c.onecycle_div / c.onecycle_final_div
            if step < w:
                return _cos_interp(start, c.lr, step / max(1, w))
            return _cos_interp(c.lr, end, min(1.0, (step - w) / max(1, n - 1 - w)))
        if step < w:
            return c.lr * (step + 1) / w
        progress = min(1.0, (step - w) / max(1, n - 1 - w))  # the last step gets the final value
        floor = c.lr * c.min_lr_ratio
        if c.schedule == "warmup_cosine":
            return _cos_interp(c.lr, floor, progress)
        return floor + (c.lr - floor) * (1 - progress) ** c.power  # polynomial

    def weight_decay(self, step: int) -> float:
        c = self.cfg
        if c.weight_decay_schedule == "constant":
            return c.weight_decay
        end = c.weight_decay if c.weight_decay_end is None else c.weight_decay_end
        return _cos_interp(c.weight_decay, end, min(1.0, step / max(1, self.total - 1)))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        lr, wd = self.lr(step), self.weight_decay(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
            if group.get("decay", True):
                group["weight_decay"] = wd
        return lr


def _cos_interp(start: float, end: float, t: float) -> float:
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * t))
