"""Tasks: what a model family contributes to the shared :class:`~tabfm.train.Trainer`.

A task cuts a batch into micro-batches (each with a weight: its share of the batch's loss),
computes the loss and metrics of one micro-batch, and counts a batch's datasets. Optionally,
``one_dataset(micro)`` gives the smallest micro-batch the loss accepts (by default every tensor
is cut to its first row): under DDP a rank that ran out of memory on the micro-batch that
all-reduces gradients runs that instead, so it still joins the all-reduce.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

Micro = tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]


class ICLTask:
    """In-context classification on prior batches ``(X, y, d, seq_lens, train_sizes)``.

    Micro-batches hold datasets of one ``(seq_len, train_size)``, as the in-context model needs;
    X is cut to that length and to the micro-batch's widest ``d``. The loss is the cross-entropy
    on the test rows only (rows ``train_size`` to ``seq_len``).
    """

    def __init__(self, max_classes: int):
        self.max_classes = max_classes

    def batch_datasets(self, batch: Any) -> int:
        return int(batch[0].shape[0])

    def micro_batches(
        self, batch: Any, micro_batch_size: int, device: torch.device
    ) -> list[tuple[Micro, float]]:
        x, y, d, seq_lens, train_sizes = batch[:5]
        n = x.shape[0]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, key in enumerate(zip(seq_lens.tolist(), train_sizes.tolist(), strict=True)):
            groups.setdefault(key, []).append(i)
        out = []
        for (seq_len, train_size), members in groups.items():
            for start in range(0, len(members), micro_batch_size):
                idx = members[start : start + micro_batch_size]
                # Contiguous members (the usual case) are sliced, not gathered: no copy.
                sel: Any = (
                    slice(idx[0], idx[-1] + 1) if idx[-1] - idx[0] + 1 == len(idx) else torch.tensor(idx)
                )
                dd = d[sel]
                width = max(1, int(dd.max()))
                micro = (
                    x[sel, :seq_len, :width].to(device, non_blocking=True),
                    y[sel, :seq_len].to(device, non_blocking=True),
                    dd.to(device, non_blocking=True),
                    train_size,
                )
                out.append((micro, len(idx) / n))
        return out

    def loss(self, model: nn.Module, micro: Micro) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, y, d, train_size = micro
        labels = y.long()
        logits = model(x, labels[:, :train_size], d)
        target = labels[:, train_size:]
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1))
        accuracy = (logits.argmax(-1) == target).float().mean()
        return loss, {"loss": loss.detach(), "accuracy": accuracy.detach()}
