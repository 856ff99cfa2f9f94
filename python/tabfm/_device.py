"""One reading of a ``device`` argument for the classifier and the training config."""

from __future__ import annotations

import torch


def resolve_device(value: str | torch.device, name: str = "device") -> torch.device:
    """``"auto"`` (CUDA when available, else the CPU) or a torch device string, checked."""
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(value)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name}={value!r} is invalid: auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name}={value!r} is invalid: CUDA is not available on this machine")
    return dev
