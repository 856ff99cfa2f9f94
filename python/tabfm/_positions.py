"""Rank sharding and exact resumption shared by the batch datasets (prior and corpus).

A dataset of this kind serves batch indices: rank ``r`` of ``W`` takes ``k * W + r`` at position
``k`` of its own sequence, and a saved position resumes only the same stream (same fingerprint)
on the same world size.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

STATE_VERSION = 1


def dist_rank_world() -> tuple[int, int]:
    """DDP rank and world size: torch.distributed if initialised, else torchrun's env vars."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:  # pragma: no cover - torch is optional for the corpus tools
        pass
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def check_rank_args(rank: Any, world_size: Any) -> None:
    """Validates explicit ``rank`` / ``world_size`` arguments (None means: from the environment)."""
    for name, v in (("rank", rank), ("world_size", world_size)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise ValueError(f"{name}={v!r} is invalid: None (auto) or a non-negative int")
    if world_size is not None and world_size < 1:
        raise ValueError(f"world_size={world_size} is invalid: must be >= 1")
    if rank is not None and world_size is not None and rank >= world_size:
        raise ValueError(f"rank={rank} is invalid: must be < world_size={world_size}")


class RankPositions:
    """Mixin: needs ``rank``, ``world_size``, ``position`` attributes and ``fingerprint()``;
    ``_mismatch`` says what resuming a state of another fingerprint would do."""

    rank: int | None
    world_size: int | None
    position: int
    _mismatch: str

    def fingerprint(self) -> str:
        raise NotImplementedError

    def _shard(self) -> tuple[int, int]:
        r, w = dist_rank_world()
        rank = self.rank if self.rank is not None else r
        world = self.world_size if self.world_size is not None else w
        if not 0 <= rank < world:
            raise ValueError(f"rank={rank} is invalid for world_size={world}")
        return rank, world

    def global_index(self, position: int) -> int:
        """The batch index this rank draws at ``position`` of its sequence."""
        rank, world = self._shard()
        return position * world + rank

    def state_dict(self, position: int | None = None) -> dict[str, Any]:
        _, world = self._shard()
        return {
            "version": STATE_VERSION,
            "position": self.position if position is None else position,
            "world_size": world,
            "fingerprint": self.fingerprint(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"state version={state.get('version')!r} is invalid: expected {STATE_VERSION}")
        if state.get("fingerprint") != self.fingerprint():
            raise ValueError(f"state fingerprint does not match {self._mismatch}")
        _, world = self._shard()
        if state.get("world_size") != world:
            raise ValueError(
                f"state world_size={state.get('world_size')} is invalid: this run has world_size={world}; "
                "positions are per rank and cannot be remapped"
            )
        position = state.get("position")
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise ValueError(f"state position={position!r} is invalid: a non-negative int")
        self.position = position
