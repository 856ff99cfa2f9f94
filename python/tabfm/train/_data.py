"""Curriculum data: a sequence of stages, each ``steps`` long with its own loader.

A loader is anything iterable with ``state_dict()`` / ``load_state_dict()`` (``PriorDataLoader``
over a ``PriorDataset`` or a corpus ``ShardDataset``). The data position saved in a checkpoint
is (stage, epoch within the stage, the loader's own state), so a resumed run draws exactly the
batches the uninterrupted run would have drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class StageSpec:
    steps: int
    make_loader: Callable[[], Any]
    micro_batch_size: int


class StagedData:
    def __init__(self, stages: list[StageSpec]):
        if not stages:
            raise ValueError("stages=[] is invalid: at least one stage")
        self.stages = stages
        self.stage = 0
        self.epoch = 0  # passes over a finite loader within this stage
        self._loader: Any = None
        self._iter: Iterator[Any] | None = None
        self._pending_state: dict[str, Any] | None = None

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    def stage_of(self, step: int) -> int:
        end = 0
        for i, s in enumerate(self.stages):
            end += s.steps
            if step < end:
                return i
        return len(self.stages) - 1

    @property
    def spec(self) -> StageSpec:
        return self.stages[self.stage]

    def next_batch(self, step: int) -> tuple[Any, bool]:
        """The batch for ``step`` and whether a pass over a finite loader just ended before it."""
        stage = self.stage_of(step)
        if stage != self.stage or self._loader is None:
            if stage != self.stage:
                self.stage, self.epoch, self._pending_state = stage, 0, None
            self._open()
        assert self._iter is not None
        try:
            return next(self._iter), False
        except StopIteration:
            self.epoch += 1
            self._loader, self._pending_state = None, None
            self._open()
            try:
                return next(self._iter), True
            except StopIteration:
                raise RuntimeError(f"stage {self.stage}: the loader yields no batches") from None

    def _open(self) -> None:
        self._loader = self.spec.make_loader()
        if self._pending_state is not None:
            self._loader.load_state_dict(self._pending_state)
            self._pending_state = None
        self._iter = iter(self._loader)

    def state_dict(self) -> dict[str, Any]:
        loader = self._loader.state_dict() if self._loader is not None else self._pending_state
        return {"stage": self.stage, "epoch": self.epoch, "loader": loader}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        stage = state["stage"]
        if not 0 <= stage < len(self.stages):
            raise ValueError(f"data state stage={stage} is invalid: this run has {len(self.stages)} stages")
        self.stage, self.epoch = stage, state["epoch"]
        self._pending_state = state["loader"]
        self._loader = self._iter = None

    def close(self) -> None:
        self._loader = self._iter = None
