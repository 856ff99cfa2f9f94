"""A DataLoader over :class:`PriorDataset` (or a corpus ``ShardDataset``) that knows how far it
got, for exact resumption."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from torch.utils.data import DataLoader

from tabfm.prior._dataset import Batch, PriorDataset


class PriorDataLoader:
    """Loads a :class:`PriorDataset` in ``num_workers`` worker processes.

    Workers take turns (worker ``w`` draws positions ``p + w, p + w + n, ...``), and the
    DataLoader returns their batches round-robin, so batches arrive in this rank's order
    ``p, p + 1, ...`` whatever ``num_workers`` is. The loader counts what it delivered:
    :meth:`state_dict` after ``k`` batches resumes at batch ``k`` exactly, with no batch lost
    or repeated. Workers are forked by default (the core's thread pool is fork-safe); pass
    ``multiprocessing_context="spawn"`` if your process holds resources that must not fork.
    """

    def __init__(
        self,
        dataset: PriorDataset,
        num_workers: int = 0,
        pin_memory: bool = False,
        prefetch_factor: int | None = None,
        multiprocessing_context: str | None = "fork",
        timeout: float = 0,
    ):
        from tabfm.corpus import ShardDataset

        if not isinstance(dataset, (PriorDataset, ShardDataset)):
            raise TypeError(
                f"dataset={dataset!r} is invalid: expected a tabfm.prior.PriorDataset or tabfm.corpus.ShardDataset"
            )
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers={num_workers!r} is invalid: an int >= 0")
        self.dataset = dataset
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor
        self.multiprocessing_context = multiprocessing_context if num_workers > 0 else None
        self.timeout = timeout
        self._delivered = dataset.position

    def __iter__(self) -> Iterator[Batch]:
        self.dataset.position = self._delivered  # workers start from what was delivered
        # Resolve the DDP rank here: spawned workers may not see torch.distributed or RANK.
        rank, world = self.dataset._shard()
        self.dataset.rank, self.dataset.world_size = rank, world
        loader = DataLoader(
            self.dataset,
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            prefetch_factor=self.prefetch_factor,
            multiprocessing_context=self.multiprocessing_context,
            timeout=self.timeout,
        )
        for batch in loader:
            if self.num_workers == 0:
                # In-process the dataset's own position is exact (it also counts skipped batches).
                self._delivered = self.dataset.position
            else:
                self._delivered += 1
            if batch is not None:  # None: a batch of a skipped corrupt shard, counted all the same
                yield batch

    def __len__(self) -> int:
        return len(self.dataset) - self._delivered

    def state_dict(self) -> dict[str, Any]:
        return self.dataset.state_dict(position=self._delivered)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.dataset.load_state_dict(state)
        self._delivered = self.dataset.position
