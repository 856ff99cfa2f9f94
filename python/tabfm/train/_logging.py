"""Training logs: a line on stdout, TensorBoard scalars, ``metrics.jsonl`` beside the checkpoints
and a progress bar on interactive terminals. Only the main process (rank 0) writes."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


class TrainLogger:
    def __init__(
        self,
        log_dir: Path | None,
        total_steps: int,
        enabled: bool = True,
        tensorboard: bool = True,
        progress: bool | None = None,
        stream: Any = None,
    ):
        self.enabled = enabled
        self.total = total_steps
        self.stream = stream or sys.stdout
        self.progress = enabled and (progress if progress is not None else self.stream.isatty())
        self._jsonl = None
        self._tb = None
        if enabled and log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(log_dir / "metrics.jsonl", "a")  # noqa: SIM115 - closed in close()
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError:  # tensorboard not installed: the JSONL log remains
                    self.message("tensorboard is not installed: logging to metrics.jsonl and stdout only")
                else:
                    self._tb = SummaryWriter(str(log_dir / "tensorboard"))
        self._start = time.perf_counter()

    def message(self, text: str) -> None:
        if self.enabled:
            if self.progress:
                self.stream.write("\r\033[K")
            print(text, file=self.stream, flush=True)

    def scalars(self, values: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, v, step)
        if self._jsonl is not None:
            self._jsonl.write(json.dumps({"step": step, "time_s": round(self.elapsed(), 3), **values}) + "\n")
            self._jsonl.flush()

    def train_line(self, step: int, values: dict[str, float]) -> None:
        self.scalars(values, step)
        parts = [f"step {step:>6}/{self.total}"]
        for key, fmt in (
            ("train/loss", "loss {:.4f}"),
            ("train/accuracy", "acc {:.3f}"),
            ("train/lr", "lr {:.2e}"),
            ("train/grad_norm", "gnorm {:.2f}"),
            ("train/datasets_per_s", "{:.1f} datasets/s"),
            ("train/data_wait_share", "data wait {:.1%}"),
        ):
            if key in values:
                parts.append(fmt.format(values[key]))
        self.message(" | ".join(parts))

    def tick(self, step: int) -> None:
        if not self.progress:
            return
        frac = step / max(1, self.total)
        elapsed = self.elapsed()
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        bar = "#" * int(30 * frac)
        self.stream.write(f"\r[{bar:<30}] {step}/{self.total} {elapsed:6.0f}s eta {eta:6.0f}s")
        self.stream.flush()

    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def close(self) -> None:
        if self.progress:
            self.stream.write("\n")
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
