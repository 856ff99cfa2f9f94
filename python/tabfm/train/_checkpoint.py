"""Checkpoints: written atomically (temporary file, fsync, rename), loadable with
``torch.load(weights_only=True)``: only tensors, numbers, strings and containers go in."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = 1
_STEP_FILE = re.compile(r"^step-(\d+)\.ckpt$")


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # a reader sees the old file or the new one, never half of one
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint={str(path)!r} is invalid: file does not exist")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path} is not a tabfm checkpoint (format {FORMAT})")
    return ckpt


def step_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _STEP_FILE.match(p.name))]
    return sorted(found)


def latest(directory: Path) -> Path | None:
    found = step_checkpoints(directory)
    return found[-1][1] if found else None


def prune(directory: Path, keep: int) -> None:
    for _, p in step_checkpoints(directory)[:-keep]:
        p.unlink(missing_ok=True)


# ------------------------------------------------------------------ RNG states


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": _to_lists(random.getstate()),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _to_lists(x: Any) -> Any:
    return [_to_lists(v) for v in x] if isinstance(x, tuple) else x


def export_model(checkpoint: str | Path, out: str | Path) -> Path:
    """The model part of a training checkpoint (weights and model info, no optimiser or data
    state): what :class:`~tabfm.TabFMClassifier` needs, a third of the size."""
    state = load(checkpoint)
    out = Path(out)
    save_atomic(
        {"format": FORMAT, "step": state["step"], "model_info": state["model_info"], "model": state["model"]},
        out,
    )
    return out
