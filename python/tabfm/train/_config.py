"""Training configuration: dataclass sections, read from YAML, overridden with ``key=value``.

Sections: ``model`` (the model family's own fields, validated by the model), ``data``, ``optim``,
``train``. Every field is checked before any work, and an error names the field, the value and
what is allowed.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SCHEDULES = ("constant", "warmup_cosine", "onecycle", "polynomial")
WD_SCHEDULES = ("constant", "cosine")
AMP_DTYPES = ("bfloat16", "float16")


@dataclass
class Stage:
    """One curriculum stage: ``steps`` optimiser steps with these prior settings."""

    steps: int
    batch_size: int = 32
    max_seq_len: int = 1024
    min_seq_len: int | None = None
    log_seq_len: bool = False
    seq_len_per_gp: bool = False
    min_train_size: float | int = 0.1
    max_train_size: float | int = 0.9
    micro_batch_size: int | None = None  # default: train.micro_batch_size


@dataclass
class DataSection:
    # PriorDataset keyword arguments shared by all stages (the stage's own fields take precedence).
    prior: dict[str, Any] = field(default_factory=lambda: {"prior_type": "mix_scm"})
    corpus: str | None = None  # a tabfm corpus directory: read it instead of drawing from the prior
    stages: list[Stage] = field(default_factory=lambda: [Stage(steps=1000)])
    num_workers: int = 1
    val_batches: int = 0  # prior batches held out for validation (0: no validation)
    val_seed: int = 1_000_003


@dataclass
class OptimSection:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    schedule: str = "warmup_cosine"
    warmup_steps: int | None = None
    warmup_fraction: float = 0.02
    min_lr_ratio: float = 0.0  # final lr / peak lr (warmup_cosine, polynomial)
    power: float = 2.0  # polynomial decay exponent
    onecycle_div: float = 25.0  # OneCycle: initial lr = lr / div
    onecycle_final_div: float = 1e4  # OneCycle: final lr = initial lr / final_div
    weight_decay_schedule: str = "constant"
    weight_decay_end: float | None = None  # cosine weight decay: value at the last step


@dataclass
class TrainSection:
    seed: int = 0
    device: str = "auto"  # auto: cuda:LOCAL_RANK when available, else cpu
    micro_batch_size: int = 8
    grad_clip: float | None = 1.0
    amp: bool = False
    amp_dtype: str = "bfloat16"
    max_oom_fraction: float = 0.1  # more skipped micro-batches than this share is an error
    max_minutes: float | None = None  # stop early (checkpointing first) after this wall time
    steps_per_epoch: int | None = None  # epochs of an endless prior (epoch hooks); None: one pass
    log_every: int = 10
    checkpoint_dir: str | None = None
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    resume: bool = True  # continue from the newest checkpoint in checkpoint_dir
    val_every: int = 100
    patience: int | None = None  # early stopping after this many validations without improvement
    tensorboard: bool = True
    progress: bool | None = None  # None: a progress bar on interactive terminals only
    torch_threads: int | None = None


@dataclass
class TrainConfig:
    model: dict[str, Any] = field(default_factory=lambda: {"preset": "tiny"})
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.data.stages)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        if not isinstance(data, dict):
            raise TypeError(f"config: expected a mapping of sections, got {type(data).__name__}")
        sections = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - sections)
        if unknown:
            raise ValueError(f"config: unknown section(s) {unknown}; allowed: {sorted(sections)}")
        model = data.get("model", {"preset": "tiny"})
        if not isinstance(model, dict):
            raise TypeError(f"model={model!r} is invalid: expected a mapping")
        cfg = cls(
            model=dict(model),
            data=_section(DataSection, data.get("data", {}), "data"),
            optim=_section(OptimSection, data.get("optim", {}), "optim"),
            train=_section(TrainSection, data.get("train", {}), "train"),
        )
        cfg.validate()
        return cfg

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
        """A YAML file, then ``section.key=value`` overrides (values parsed as YAML)."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config={str(path)!r} is invalid: file does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"config {path}: expected a mapping of sections, got {type(data).__name__}")
        return cls.from_dict(apply_overrides(data, overrides or []))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["optim"]["betas"] = list(self.optim.betas)
        return out

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        d, o, t = self.data, self.optim, self.train
        if not d.stages:
            raise ValueError("data.stages=[] is invalid: at least one stage")
        for i, s in enumerate(d.stages):
            _positive_int(s.steps, f"data.stages[{i}].steps")
            _positive_int(s.batch_size, f"data.stages[{i}].batch_size")
            _positive_int(s.max_seq_len, f"data.stages[{i}].max_seq_len")
            if s.micro_batch_size is not None:
                _positive_int(s.micro_batch_size, f"data.stages[{i}].micro_batch_size")
        if not isinstance(d.prior, dict):
            raise TypeError(f"data.prior={d.prior!r} is invalid: a mapping of PriorDataset arguments")
        clash = sorted(set(d.prior) & {f.name for f in dataclasses.fields(Stage)} - {"steps"})
        if clash:
            raise ValueError(
                f"data.prior sets {clash}: these are per-stage settings, set them in data.stages"
            )
        _nonneg_int(d.num_workers, "data.num_workers")
        _nonneg_int(d.val_batches, "data.val_batches")
        _positive(o.lr, "optim.lr")
        if not (
            isinstance(o.betas, (list, tuple)) and len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas)
        ):
            raise ValueError(f"optim.betas={o.betas!r} is invalid: two numbers in [0, 1)")
        o.betas = (float(o.betas[0]), float(o.betas[1]))
        _nonneg(o.weight_decay, "optim.weight_decay")
        _choice(o.schedule, SCHEDULES, "optim.schedule")
        _choice(o.weight_decay_schedule, WD_SCHEDULES, "optim.weight_decay_schedule")
        if o.warmup_steps is not None:
            _nonneg_int(o.warmup_steps, "optim.warmup_steps")
        if not 0 <= o.warmup_fraction < 1:
            raise ValueError(f"optim.warmup_fraction={o.warmup_fraction!r} is invalid: in [0, 1)")
        if not 0 <= o.min_lr_ratio <= 1:
            raise ValueError(f"optim.min_lr_ratio={o.min_lr_ratio!r} is invalid: in [0, 1]")
        _positive(o.power, "optim.power")
        _positive(o.onecycle_div, "optim.onecycle_div")
        _positive(o.onecycle_final_div, "optim.onecycle_final_div")
        if o.weight_decay_end is not None:
            _nonneg(o.weight_decay_end, "optim.weight_decay_end")
        _positive_int(t.micro_batch_size, "train.micro_batch_size")
        if t.grad_clip is not None:
            _positive(t.grad_clip, "train.grad_clip")
        _choice(t.amp_dtype, AMP_DTYPES, "train.amp_dtype")
        if not 0 <= t.max_oom_fraction <= 1:
            raise ValueError(f"train.max_oom_fraction={t.max_oom_fraction!r} is invalid: in [0, 1]")
        if t.max_minutes is not None:
            _positive(t.max_minutes, "train.max_minutes")
        if t.steps_per_epoch is not None:
            _positive_int(t.steps_per_epoch, "train.steps_per_epoch")
        for name in ("log_every", "checkpoint_every", "keep_checkpoints", "val_every"):
            _positive_int(getattr(t, name), f"train.{name}")
        if t.patience is not None:
            _positive_int(t.patience, "train.patience")
        if t.torch_threads is not None:
            _positive_int(t.torch_threads, "train.torch_threads")
        from tabfm._device import resolve_device

        resolve_device(t.device, "train.device")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``section.key=value`` (dotted; ``data.stages.0.steps=5`` indexes a list); YAML values."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set {item!r} is invalid: expected key=value, e.g. optim.lr=3e-4")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        target: Any = data
        for i, p in enumerate(parts[:-1]):
            if isinstance(target, list):
                target = _list_item(target, p, key)
                continue
            nxt = target.get(p)
            if nxt is None:
                nxt = target[p] = [] if parts[i + 1].isdigit() else {}
            if not isinstance(nxt, (dict, list)):
                raise ValueError(f"--set {key}: {p!r} holds {nxt!r}, not a section")
            target = nxt
        value = yaml.safe_load(raw)
        if isinstance(target, list):
            idx = int(parts[-1]) if parts[-1].isdigit() else -1
            if not 0 <= idx < len(target):
                raise ValueError(f"--set {key}: index {parts[-1]!r} is out of range (list of {len(target)})")
            target[idx] = value
        else:
            target[parts[-1]] = value
    return data


def _list_item(target: list[Any], p: str, key: str) -> Any:
    if not p.isdigit() or int(p) >= len(target):
        raise ValueError(f"--set {key}: {p!r} is not an index of a list of {len(target)}")
    return target[int(p)]


def _section(cls: type, data: Any, name: str) -> Any:
    if not isinstance(data, dict):
        raise TypeError(f"{name}={data!r} is invalid: expected a mapping")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{name}: unknown field(s) {unknown}; allowed: {sorted(known)}")
    kwargs = dict(data)
    for k, v in kwargs.items():
        # YAML 1.1 reads 1e-4 (no dot) as a string: take it as the float it is meant to be.
        if isinstance(v, str) and "float" in str(known[k].type):
            with contextlib.suppress(ValueError):
                kwargs[k] = float(v)
    if cls is DataSection and "stages" in kwargs:
        stages = kwargs["stages"]
        if not isinstance(stages, list):
            raise TypeError(f"data.stages={stages!r} is invalid: a list of stages")
        kwargs["stages"] = [
            s if isinstance(s, Stage) else _section(Stage, s, f"data.stages[{i}]")
            for i, s in enumerate(stages)
        ]
    if cls is Stage and "steps" not in kwargs:
        raise ValueError(f"{name}: 'steps' is required")
    return cls(**kwargs)


def _choice(v: Any, allowed: tuple[str, ...], name: str) -> None:
    if v not in allowed:
        raise ValueError(f"{name}={v!r} is invalid: choose one of {list(allowed)}")


def _positive_int(v: Any, name: str) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name}={v!r} is invalid: an int >= 1")


def _nonneg_int(v: Any, name: str) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{name}={v!r} is invalid: an int >= 0")


def _positive(v: Any, name: str) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise ValueError(f"{name}={v!r} is invalid: a number > 0")


def _nonneg(v: Any, name: str) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
        raise ValueError(f"{name}={v!r} is invalid: a number >= 0")
