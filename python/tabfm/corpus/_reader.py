"""``ShardDataset``: training batches read back from a corpus, by index, on any number of DDP
ranks and DataLoader workers, resumable, with bounded memory."""

from __future__ import annotations

import bisect
import json
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from tabfm import _core
from tabfm._positions import RankPositions, check_rank_args
from tabfm.corpus._format import (
    FORMAT_VERSION,
    MANIFEST,
    SHARD_DIR,
    CorpusError,
    file_digest,
    read_record,
    schema,
    shard_name,
)

#: The per-dataset scalar columns a batch needs besides X and y.
_SCALARS = ["seq_len", "train_size", "d"]
#: ``created_by`` of the shards the core writes, whose float pages the core also decodes.
_TABFM_WRITER = "tabfm version "


def _fast_chunks(handle) -> dict[str, list[tuple[int, int, bool]]] | None:
    """Byte ranges ``(offset, length, zstd)`` per row group of the x and y columns when the
    core wrote this shard (one float32 data page per chunk), else None (Arrow decodes it)."""
    md = handle.metadata
    if not (md.created_by or "").startswith(_TABFM_WRITER):
        return None
    out: dict[str, list[tuple[int, int, bool]]] = {"x": [], "y": []}
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        for j in range(rg.num_columns):
            c = rg.column(j)
            name = c.path_in_schema.split(".")[0]
            if name not in out:
                continue
            if (
                c.physical_type != "FLOAT"
                or c.compression not in ("ZSTD", "UNCOMPRESSED")
                or c.has_dictionary_page
            ):
                return None
            out[name].append((c.data_page_offset, c.total_compressed_size, c.compression == "ZSTD"))
    if any(len(v) != md.num_row_groups for v in out.values()):
        return None
    return out


def _row_groups(starts: list[int], lo: int, hi: int) -> range:
    """The row groups (starting at datasets ``starts``) that hold datasets [lo, hi)."""
    return range(bisect.bisect_right(starts, lo) - 1, bisect.bisect_left(starts, hi))


class ShardDataset(RankPositions, IterableDataset):
    """Batches of exactly ``batch_size`` datasets from a corpus written by ``tabfm generate``.

    Datasets are taken in corpus order (``dataset_index``); batch ``k`` holds datasets
    ``[k * batch_size, (k + 1) * batch_size)`` and is padded with zeros to its largest ``d`` and
    ``seq_len``. Rank ``r`` of ``W`` reads batches ``r, r + W, ...``; DataLoader workers share a
    rank's batches round-robin, so a DataLoader delivers them in order. A trailing partial batch
    and the batches that would make ranks unequal are dropped (``len()`` counts what is read).

    Only the Parquet row groups that hold a batch are read, so every rank and worker reads its
    own share of the corpus; at most ``cache_shards`` open shards (footers) are cached. Every
    read checks the schema, the dataset count and the Parquet page checksums; ``verify="digest"``
    also hashes each whole shard once per process against its record (XXH3-128). A failure raises
    :class:`CorpusError` naming the file and the check, or with ``skip_corrupt=True`` warns and
    skips the batches that touch it. With ``follow=True`` the reader waits (up to ``timeout``
    seconds per shard) for shards still being written, for a corpus whose manifest does not exist
    yet.
    """

    def __init__(
        self,
        path: str | Path,
        batch_size: int,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        follow: bool = False,
        timeout: float = 600.0,
        skip_corrupt: bool = False,
        cache_shards: int = 2,
        verify: str = "pages",
        device: str = "cpu",
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} is invalid: must be an int >= 1")
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"timeout={timeout!r} is invalid: must be a positive number of seconds")
        if verify not in ("pages", "digest"):
            raise ValueError(
                f"verify={verify!r} is invalid: 'pages' (Parquet page checksums) or 'digest' (whole shards)"
            )
        if isinstance(cache_shards, bool) or not isinstance(cache_shards, int) or cache_shards < 1:
            raise ValueError(f"cache_shards={cache_shards!r} is invalid: must be an int >= 1")
        check_rank_args(rank, world_size)
        self.path = Path(path)
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.follow, self.timeout, self.skip_corrupt = follow, float(timeout), skip_corrupt
        self.cache_shards = cache_shards
        self.verify = verify
        self.device = device
        super().__init__()
        self.position = 0
        info_path = self.path / "corpus.json"
        if not info_path.is_file():
            raise FileNotFoundError(
                f"path={str(self.path)!r} is not a tabfm corpus: {info_path} does not exist"
            )
        self.info = json.loads(info_path.read_text())
        manifest_path = self.path / MANIFEST
        if manifest_path.is_file():
            self.manifest: dict[str, Any] | None = json.loads(manifest_path.read_text())
        elif follow:
            self.manifest = None
        else:
            raise CorpusError(
                f"{manifest_path} does not exist: the corpus is incomplete (still being written?); "
                "pass follow=True to read shards as they appear"
            )
        version = self.info.get("format_version")
        if version != FORMAT_VERSION:
            raise CorpusError(
                f"{self.path}: corpus format version {version}, this tabfm reads version {FORMAT_VERSION}: "
                "regenerate the corpus with this version"
            )
        # Dataset counts per shard come from the records, so batches map to shards without
        # reading them; a corpus still being written (follow mode) has full generated batches.
        self.gen_batch = int(self.info["batch_size"])
        self.num_shards = int(self.info["num_batches"])
        if self.manifest is not None:
            counts = [int(r["datasets"]) for r in self.manifest["shards"]]
        else:
            counts = [self.gen_batch] * self.num_shards
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64).tolist()
        self.total = self._starts[-1]
        self._cache: OrderedDict[int, Any] = OrderedDict()
        self._verified: set[int] = set()
        self._bad: set[int] = set()
        self._schema = schema(bool(self.info.get("float16", False)))

    # ------------------------------------------------------------------ sharding
    def __len__(self) -> int:
        """Batches this rank reads (equal on every rank)."""
        _, world = self._shard()
        return (self.total // self.batch_size) // world

    # ------------------------------------------------------------------ shards
    def _record(self, shard: int) -> dict[str, Any]:
        if self.manifest is not None:
            return self.manifest["shards"][shard]
        shards = self.path / SHARD_DIR
        deadline = time.monotonic() + self.timeout
        while True:
            record = read_record(shards, shard)
            if record is not None:
                return record
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"shard {shards / (shard_name(shard) + '.parquet')} did not appear within "
                    f"timeout={self.timeout}s (follow mode)"
                )
            time.sleep(min(0.5, self.timeout / 10))

    def _open(self, shard: int):
        """The opened shard (cached; only its footer is read), or None when it is corrupt and
        skipped. ``verify="digest"`` also hashes the whole file once per process."""
        if shard in self._cache:
            self._cache.move_to_end(shard)
            return self._cache[shard]
        if shard in self._bad:
            return None
        import pyarrow.parquet as pq

        record = self._record(shard)
        file = self.path / record["file"]
        try:
            if not file.is_file():
                raise CorpusError(f"{file}: shard file is missing")
            if self.verify == "digest" and shard not in self._verified:
                digest = file_digest(file)
                if digest != record.get("xxh3_128"):
                    raise CorpusError(
                        f"{file}: checksum mismatch (expected XXH3-128 {str(record.get('xxh3_128'))[:16]}..., got "
                        f"{digest[:16]}...): the shard is truncated or corrupted"
                    )
            try:
                handle = pq.ParquetFile(file, page_checksum_verification=True)
            except Exception as e:  # pyarrow raises several types for damaged files
                raise CorpusError(
                    f"{file}: unreadable Parquet ({e}): the shard is truncated or corrupted"
                ) from None
            if not handle.schema_arrow.equals(self._schema, check_metadata=False):
                raise CorpusError(
                    f"{file}: schema mismatch: expected {self._schema}, found {handle.schema_arrow}"
                )
            expected = self._starts[shard + 1] - self._starts[shard]
            if handle.metadata.num_rows != expected:
                raise CorpusError(
                    f"{file}: holds {handle.metadata.num_rows} datasets, its record says {expected}"
                )
        except CorpusError as e:
            self._corrupt(e)
            self._bad.add(shard)
            return None
        self._verified.add(shard)
        sizes = [handle.metadata.row_group(i).num_rows for i in range(handle.num_row_groups)]
        entry = (
            handle,
            np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64).tolist(),
            file,
            _fast_chunks(handle),
        )
        self._cache[shard] = entry
        while len(self._cache) > self.cache_shards:
            self._cache.popitem(last=False)
        return entry

    def _corrupt(self, error: CorpusError) -> None:
        if not self.skip_corrupt:
            raise error
        warnings.warn(f"skipping corrupt shard: {error}", stacklevel=4)

    def _rows(self, shard: int, lo: int, hi: int, columns: list[str] | None = None, whole: bool = False):
        """Datasets [lo, hi) of a shard as an Arrow table (all columns, or ``columns``), reading
        only the row groups holding them (their page checksums are verified), or with ``whole``
        those row groups unsliced; None when the shard is corrupt and skipped."""
        entry = self._open(shard)
        if entry is None:
            return None
        handle, starts, file, _ = entry
        groups = _row_groups(starts, lo, hi)
        try:
            table = handle.read_row_groups(list(groups), columns=columns, use_threads=False)
        except Exception as e:
            self._cache.pop(shard, None)
            self._bad.add(shard)
            self._corrupt(
                CorpusError(f"{file}: unreadable Parquet ({e}): the shard is truncated or corrupted")
            )
            return None
        return table if whole else table.slice(lo - starts[groups.start], hi - lo)

    def _decode(
        self, shard: int, lo: int, hi: int, entry, groups: range, groups_table, X, y, slot: int
    ) -> bool:
        """Decodes datasets [lo, hi) of a tabfm-written shard's x and y columns into slots
        ``slot ..`` of X and y (page checksums verified); ``groups`` are the row groups holding
        them, ``groups_table`` their seq_len and d. False when the shard is corrupt and skipped."""
        _, starts, file, chunks = entry
        counts = [starts[g + 1] - starts[g] for g in groups]
        skip = lo - starts[groups.start]
        name = "seq_len, d"
        try:
            # The shapes of every list in these row groups, the skipped ones included.
            rows = groups_table.column("seq_len").to_numpy().astype(np.int64)
            cols = groups_table.column("d").to_numpy().astype(np.int64)
            if (rows < 0).any() or (cols < 0).any():
                raise ValueError("negative seq_len or d")
            rows, cols = rows.tolist(), cols.tolist()
            for name, out, widths in (("x", X, cols), ("y", y[:, :, None], [1] * len(rows))):
                picked = [chunks[name][g] for g in groups]
                _core.read_shard_lists(
                    file, picked, counts, rows, widths, skip, hi - lo, slot, out, groups.start
                )
        except Exception as e:  # the core's ValueError, or whatever pyarrow raises for damage
            self._cache.pop(shard, None)
            self._bad.add(shard)
            self._corrupt(CorpusError(f"{file}: column {name}: {e}: the shard is truncated or corrupted"))
            return False
        return True

    def read_shard(self, shard: int):
        """A whole shard as an Arrow table (verified), or None when corrupt and skipped."""
        return self._rows(shard, 0, self._starts[shard + 1] - self._starts[shard])

    # ------------------------------------------------------------------ batches
    def get_batch_numpy(self, index: int, return_meta: bool = False) -> tuple[Any, ...] | None:
        """Batch ``index`` as numpy arrays (X, y, d, seq_lens, train_sizes[, meta]); None when
        it touches a skipped corrupt shard."""
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise ValueError(f"index={index!r} is invalid: a non-negative int")
        start, stop = index * self.batch_size, (index + 1) * self.batch_size
        if stop > self.total:
            raise IndexError(
                f"index={index} is out of range: the corpus holds {self.total // self.batch_size} batches"
            )
        # Per shard touched: its datasets [lo, hi), their scalar (and meta) columns, and where
        # X and y come from: the core's decoder for tabfm-written shards, else Arrow.
        parts = []
        shard = bisect.bisect_right(self._starts, start) - 1
        while self._starts[shard] < stop:
            lo = max(start - self._starts[shard], 0)
            hi = min(stop, self._starts[shard + 1]) - self._starts[shard]
            if hi > lo:
                entry = self._open(shard)
                fast = entry is not None and entry[3] is not None
                if fast:
                    columns = _SCALARS + (["meta", "lineage"] if return_meta else [])
                    groups_table = self._rows(shard, lo, hi, columns, whole=True)
                    if groups_table is None:
                        return None
                    groups = _row_groups(entry[1], lo, hi)
                    table = groups_table.slice(lo - entry[1][groups.start], hi - lo)
                    parts.append((shard, lo, hi, table, (entry, groups, groups_table)))
                else:
                    table = self._rows(shard, lo, hi)
                    if table is None:
                        return None
                    parts.append((shard, lo, hi, table, None))
            shard += 1
        rows = [p[3] for p in parts]
        d = np.concatenate([r.column("d").to_numpy() for r in rows]).astype(np.int64)
        seq_lens = np.concatenate([r.column("seq_len").to_numpy() for r in rows]).astype(np.int64)
        train_sizes = np.concatenate([r.column("train_size").to_numpy() for r in rows]).astype(np.int64)
        t, f = int(seq_lens.max()), max(int(d.max()), 1)
        X = np.zeros((self.batch_size, t, f), dtype=np.float32)
        y = np.zeros((self.batch_size, t), dtype=np.float32)
        b = 0
        metas = []
        for shard, lo, hi, r, fast in parts:
            if fast is not None and not self._decode(shard, lo, hi, *fast, X, y, b):
                return None
            xs, ys = (r.column("x"), r.column("y")) if fast is None else (None, None)
            for i in range(r.num_rows):
                if fast is None:
                    n, k = int(seq_lens[b]), int(d[b])
                    X[b, :n, :k] = xs[i].values.to_numpy(zero_copy_only=False).reshape(n, k)
                    y[b, :n] = ys[i].values.to_numpy(zero_copy_only=False)
                if return_meta:
                    m = json.loads(r.column("meta")[i].as_py())
                    lineage = r.column("lineage")[i].as_py()
                    if lineage is not None:
                        m["lineage"] = json.loads(lineage)
                    metas.append(m)
                b += 1
        out = (X, y, d, seq_lens, train_sizes)
        return (*out, metas) if return_meta else out

    def get_batch(self, index: int, return_meta: bool = False) -> Any:
        import torch

        arrays = self.get_batch_numpy(index, return_meta)
        if arrays is None:
            return None
        tensors = tuple(torch.from_numpy(a) for a in arrays[:5])
        if self.device != "cpu":
            tensors = tuple(t.to(self.device, non_blocking=True) for t in tensors)
        return (*tensors, arrays[5]) if return_meta else tensors

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        position = self.position + worker
        n = len(self)
        while position < n:
            batch = self.get_batch(self.global_index(position))
            if info is None:
                self.position = position + 1
                position += workers
                if batch is not None:
                    yield batch
                continue
            position += workers
            yield batch  # None for a skipped batch: the loader counts it, then drops it

    # ------------------------------------------------------------------ resumption
    _mismatch = "this corpus and batch_size: resuming would read other batches"

    def fingerprint(self) -> str:
        return f"{self.info['fingerprint']}/{self.batch_size}"
