"""Hooks: code the trainer runs every ``each`` steps or epochs (``trigger``), with a ``setup``
before the first step and a ``cleanup`` after the last. A hook's ``state_dict`` is saved in the
checkpoint, so a resumed run continues its counters (e.g. early-stopping patience)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tabfm.train._trainer import Trainer

TRIGGERS = ("step", "epoch")


class Hook:
    """Base class. Override :meth:`hook` (and optionally :meth:`setup`, :meth:`cleanup`)."""

    def __init__(self, each: int = 1, trigger: str = "step"):
        if isinstance(each, bool) or not isinstance(each, int) or each < 1:
            raise ValueError(f"each={each!r} is invalid: an int >= 1")
        if trigger not in TRIGGERS:
            raise ValueError(f"trigger={trigger!r} is invalid: choose one of {list(TRIGGERS)}")
        self.each, self.trigger = each, trigger

    def due(self, trigger: str, count: int) -> bool:
        return trigger == self.trigger and count % self.each == 0

    def setup(self, trainer: Trainer) -> None:
        pass

    def hook(self, trainer: Trainer) -> None:
        pass

    def cleanup(self, trainer: Trainer) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class FunctionHook(Hook):
    """A hook from plain functions of the trainer."""

    def __init__(
        self,
        fn: Callable[[Trainer], Any],
        each: int = 1,
        trigger: str = "step",
        setup: Callable[[Trainer], Any] | None = None,
        cleanup: Callable[[Trainer], Any] | None = None,
    ):
        super().__init__(each, trigger)
        self.fn, self._setup, self._cleanup = fn, setup, cleanup

    def setup(self, trainer: Trainer) -> None:
        if self._setup is not None:
            self._setup(trainer)

    def hook(self, trainer: Trainer) -> None:
        self.fn(trainer)

    def cleanup(self, trainer: Trainer) -> None:
        if self._cleanup is not None:
            self._cleanup(trainer)


class ValidationHook(Hook):
    """Validates, keeps the best model (``best.ckpt``) and stops after ``patience`` validations
    without an improvement of ``metric`` (lower is better unless ``mode="max"``)."""

    def __init__(
        self,
        each: int = 100,
        trigger: str = "step",
        metric: str = "loss",
        mode: str = "min",
        patience: int | None = None,
        save_best: bool = True,
        min_delta: float = 0.0,
    ):
        super().__init__(each, trigger)
        if mode not in ("min", "max"):
            raise ValueError(f"mode={mode!r} is invalid: 'min' or 'max'")
        if patience is not None and (
            isinstance(patience, bool) or not isinstance(patience, int) or patience < 1
        ):
            raise ValueError(f"patience={patience!r} is invalid: None or an int >= 1")
        self.metric, self.mode, self.patience = metric, mode, patience
        self.save_best, self.min_delta = save_best, min_delta
        self.best: float | None = None
        self.bad = 0
        self.history: list[dict[str, float]] = []

    def hook(self, trainer: Trainer) -> None:
        metrics = trainer.validate()
        if self.metric not in metrics:
            raise KeyError(f"validation metric {self.metric!r} not among {sorted(metrics)}")
        value = metrics[self.metric]
        self.history.append({"step": trainer.step, **metrics})
        sign = 1 if self.mode == "min" else -1
        if self.best is None or sign * (value - self.best) < -self.min_delta:
            self.best, self.bad = value, 0
            if self.save_best:
                trainer.save_checkpoint(name="best.ckpt")
        else:
            self.bad += 1
            if self.patience is not None and self.bad >= self.patience:
                trainer.request_stop(f"early stopping: no better val {self.metric} in {self.bad} validations")
        trainer.log.scalars({f"val/{k}": v for k, v in metrics.items()}, trainer.step)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad": self.bad, "history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad, self.history = state["best"], state["bad"], list(state["history"])
