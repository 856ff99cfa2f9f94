"""Type stubs for the Rust extension ``tabfm._core`` (hand-written)."""

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__version__: str

class PriorEngine:
    """A validated prior configuration (JSON) that generates batches by index."""

    def __init__(self, config_json: str) -> None: ...
    @property
    def config_json(self) -> str: ...
    def generate(
        self, index: int, n_jobs: int = 1, with_meta: bool = False
    ) -> tuple[
        npt.NDArray[np.float32],
        npt.NDArray[np.float32],
        npt.NDArray[np.int64],
        npt.NDArray[np.int64],
        npt.NDArray[np.int64],
        list[dict[str, Any]] | None,
    ]: ...
    def __reduce__(self) -> tuple[Any, tuple[str]]: ...

def philox4x64_10(ctr: tuple[int, int, int, int], key: tuple[int, int]) -> tuple[int, int, int, int]: ...
def random_stream(seed: int, stream: int, n: int, kind: str) -> npt.NDArray[Any]: ...
def available_threads() -> int: ...
def write_corpus_shard(
    path: str | os.PathLike[str],
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.float32],
    d: npt.NDArray[np.int64],
    seq_lens: npt.NDArray[np.int64],
    train_sizes: npt.NDArray[np.int64],
    batch_index: int,
    batch_size: int,
    num_classes: list[int | None],
    categorical: list[list[int]],
    valid: list[bool],
    meta: list[str],
    lineage: list[str | None],
    arrow_schema: str,
    row_group: int,
    zstd_level: int | None,
    n_jobs: int,
) -> tuple[int, str]:
    """Writes one batch as a corpus shard (synced to disk); returns (bytes, XXH3-128 hex digest)."""

def file_digest(path: str | os.PathLike[str]) -> str:
    """XXH3-128 hex digest of a file (32 hex digits, as ``xxhsum -H2`` prints it)."""

def read_shard_lists(
    path: str | os.PathLike[str],
    chunks: Sequence[tuple[int, int, bool]],
    lists_per_chunk: Sequence[int],
    rows: Sequence[int],
    cols: Sequence[int],
    skip: int,
    count: int,
    slot: int,
    out: npt.NDArray[np.float32],
    first_group: int = 0,
) -> None:
    """Decodes lists ``skip .. skip + count`` of one float list column of a shard written by
    tabfm (``chunks``: ``(offset, length, zstd)`` of consecutive row groups from
    ``first_group`` on, each holding
    ``lists_per_chunk[i]`` lists of ``rows[j] x cols[j]`` cells) into slots ``slot ..`` of
    ``out`` (slots, t, f), verifying each page's CRC32. Raises ``ValueError`` naming the row
    group and what failed for a damaged or foreign chunk."""

def _tree_fit_predict(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.float32], max_depth: int, n_estimators: int
) -> npt.NDArray[np.float32]: ...
def _debug_panic(in_pool: bool) -> None: ...
def learnability(
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.float32],
    classification: bool,
    seed: int = 0,
    n_estimators: int = 25,
    max_depth: int = 6,
    n_bootstrap: int = 200,
) -> dict[str, float]:
    """Out-of-bag ExtraTrees vs a constant baseline: pvalue, score, model_rmse, baseline_rmse, n_oob."""
    ...
