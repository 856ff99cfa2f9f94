"""On-disk corpus format: one Parquet shard per generated batch, one row per dataset.

Layout of a corpus directory::

    effective_config.yaml    every PriorDataset argument as resolved (graph sections included)
    config_trace.yaml        where each setting came from: default, config file, --set, cli
    shards/batch-000000042.parquet   the datasets of batch 42 (zstd, page checksums)
    shards/batch-000000042.json      its record: datasets, active cells, bytes, XXH3-128 digest
    manifest.json            written once every shard exists: all records, totals, fingerprint

Row schema (``SCHEMA``; ``x`` is float16 in float16 mode):

==================  ====================  ==================================================
column              type                  content
==================  ====================  ==================================================
dataset_index       int64                 batch_index * batch_size + position (global order)
batch_index         int64                 the generator's batch index
position            int32                 position in that batch
seq_len             int32                 rows (train + test)
train_size          int32                 rows [0, train_size) are the context
d                   int32                 active feature columns
num_classes         int32 (null = regr.)  requested classes
x                   list<float32>         the seq_len x d active cells, row-major (NaN = missing)
y                   list<float32>         seq_len targets (class ids or standardised values)
categorical         list<int32>           categorical columns among the d
valid               bool                  False when every attempt failed its checks
meta                string (JSON)         prior type, attempts, realised classes, hp, rejections
lineage             string (JSON) / null  graph prior: DAG, feature nodes, target, families...
==================  ====================  ==================================================
"""

from __future__ import annotations

import base64
import functools
import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

#: 3: records carry XXH3-128 digests (2: BLAKE3, 1: sha256 and the pyarrow writer).
FORMAT_VERSION = 3
SHARD_DIR = "shards"
MANIFEST = "manifest.json"
EFFECTIVE_CONFIG = "effective_config.yaml"
CONFIG_TRACE = "config_trace.yaml"
#: Datasets per Parquet row group: readers fetch row groups, so a partial read stays small.
ROW_GROUP = 8
#: Default zstd level of the shards: zstd's first fast level. Standardised float cells barely
#: compress (level -1 stores 90 % of mix_scm's raw bytes, level 1 83 %), and level 1's entropy
#: coding of them costs 1.7x the CPU time, which on a machine whose cores all generate is
#: taken from generation; ``--zstd-level`` buys the smaller files. The README measures the trade.
ZSTD_LEVEL = -1
#: zstd's fastest mode (ZSTD_minCLevel: levels go down to -131072).
ZSTD_MAX_FAST = 131072


class CorpusError(RuntimeError):
    """A corpus file is missing, truncated, corrupted or does not match the expected schema."""


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - pyarrow is a dependency
        raise ImportError("tabfm corpora need pyarrow: pip install pyarrow") from e
    return pa, pq


def schema(float16: bool = False):
    pa, _ = _pa()
    return pa.schema(
        [
            ("dataset_index", pa.int64()),
            ("batch_index", pa.int64()),
            ("position", pa.int32()),
            ("seq_len", pa.int32()),
            ("train_size", pa.int32()),
            ("d", pa.int32()),
            ("num_classes", pa.int32()),
            ("x", pa.list_(pa.float16() if float16 else pa.float32())),
            ("y", pa.list_(pa.float32())),
            ("categorical", pa.list_(pa.int32())),
            ("valid", pa.bool_()),
            ("meta", pa.string()),
            ("lineage", pa.string()),
        ]
    )


@functools.cache
def _arrow_schema_b64() -> str:
    """The Arrow schema as Arrow's Parquet writer stores it (``ARROW:schema``), so that Arrow
    readers restore list field names and types exactly."""
    return base64.b64encode(schema(False).serialize().to_pybytes()).decode()


def shard_name(batch_index: int) -> str:
    return f"batch-{batch_index:09d}"


def _columns_of_meta(meta: list[dict[str, Any]]) -> tuple[list, list, list, list, list]:
    """num_classes, categorical, valid, meta JSON and lineage JSON columns of a batch's metadata."""
    num_classes, cats, valid, metas, lineages = [], [], [], [], []
    for item in meta:
        m = dict(item)
        lineage = m.pop("lineage", None)
        num_classes.append(m.get("num_classes"))
        cats.append([int(c) for c in m.get("categorical_columns", [])])
        valid.append(bool(m.get("valid", True)))
        metas.append(json.dumps(m, sort_keys=True))
        lineages.append(None if lineage is None else json.dumps(lineage, sort_keys=True))
    return num_classes, cats, valid, metas, lineages


def _check_cells(batch_index: int, d: np.ndarray, seq_lens: np.ndarray) -> int:
    cells = int((d.astype(np.int64) * seq_lens.astype(np.int64)).sum())
    if cells >= 2**31:
        raise CorpusError(
            f"batch {batch_index} holds >= 2**31 active cells: too large for one shard; use a smaller --batch-size"
        )
    return cells


def batch_table(
    batch_index: int,
    batch_size: int,
    arrays: tuple[np.ndarray, ...],
    meta: list[dict[str, Any]],
    float16: bool,
):
    """The Arrow table of one generated batch (numpy arrays as returned by the core)."""
    pa, _ = _pa()
    X, y, d, seq_lens, train_sizes = arrays
    _check_cells(batch_index, d, seq_lens)
    num_classes, cats, valid, metas, lineages = _columns_of_meta(meta)
    xs = [X[b, : int(seq_lens[b]), : int(d[b])].reshape(-1) for b in range(X.shape[0])]
    ys = [y[b, : int(seq_lens[b])] for b in range(X.shape[0])]
    x_type = pa.float16() if float16 else pa.float32()
    offsets = np.concatenate([[0], np.cumsum([len(v) for v in xs])]).astype(np.int32)
    flat = np.concatenate(xs) if xs else np.zeros(0, np.float32)
    x_values = pa.array(flat.astype(np.float16) if float16 else flat, type=x_type)
    y_offsets = np.concatenate([[0], np.cumsum([len(v) for v in ys])]).astype(np.int32)
    y_values = pa.array(np.concatenate(ys).astype(np.float32) if ys else np.zeros(0, np.float32))
    n = X.shape[0]
    cols = {
        "dataset_index": pa.array(batch_index * batch_size + np.arange(n, dtype=np.int64)),
        "batch_index": pa.array(np.full(n, batch_index, dtype=np.int64)),
        "position": pa.array(np.arange(n, dtype=np.int32)),
        "seq_len": pa.array(seq_lens.astype(np.int32)),
        "train_size": pa.array(train_sizes.astype(np.int32)),
        "d": pa.array(d.astype(np.int32)),
        "num_classes": pa.array(num_classes, type=pa.int32()),
        "x": pa.ListArray.from_arrays(pa.array(offsets), x_values),
        "y": pa.ListArray.from_arrays(pa.array(y_offsets), y_values),
        "categorical": pa.array(cats, type=pa.list_(pa.int32())),
        "valid": pa.array(valid),
        "meta": pa.array(metas, type=pa.string()),
        "lineage": pa.array(lineages, type=pa.string()),
    }
    return pa.table(cols, schema=schema(float16))


def file_digest(path: Path) -> str:
    """The shard checksum of records and manifests: XXH3-128 (``xxhsum -H2`` prints the same)."""
    from tabfm import _core

    return _core.file_digest(path)


def _writer_id() -> str:
    """Unique per process and thread: concurrent writers never share a temporary file."""
    return f"{os.getpid()}-{threading.get_ident()}"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes to a temporary name in the same directory, fsyncs, then renames over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{_writer_id()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _publish(directory: Path, batch_index: int, tmp: Path, datasets: int, cells: int, size: int, digest: str):
    record = {
        "file": f"{SHARD_DIR}/{shard_name(batch_index)}.parquet",
        "batch_index": batch_index,
        "datasets": datasets,
        "active_cells": cells,
        "bytes": size,
        "xxh3_128": digest,
    }
    # The record is renamed into place after the shard, so a shard without a record is an
    # interrupted write and is regenerated on resume.
    os.replace(tmp, directory / f"{shard_name(batch_index)}.parquet")
    atomic_write_text(
        directory / f"{shard_name(batch_index)}.json", json.dumps(record, sort_keys=True) + "\n"
    )
    return record


def _tmp_shard(directory: Path, batch_index: int) -> Path:
    return directory / f".{shard_name(batch_index)}.parquet.tmp-{_writer_id()}"


def write_shard(directory: Path, batch_index: int, table, active_cells: int, zstd_level: int = ZSTD_LEVEL):
    """Writes an Arrow table as one shard and its record, each atomically; returns the record.

    Used for float16 corpora and for filtered copies; generated float32 batches take the
    faster ``write_batch_shard``. Both give files of the same schema.
    """
    _, pq = _pa()
    tmp = _tmp_shard(directory, batch_index)
    pq.write_table(
        table,
        tmp,
        compression="zstd",
        compression_level=zstd_level,
        # Dictionary encoding of float cells costs 5x the write time and makes files larger.
        use_dictionary=False,
        row_group_size=ROW_GROUP,
        write_page_checksum=True,
        write_statistics=False,
    )
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    return _publish(
        directory, batch_index, tmp, table.num_rows, active_cells, tmp.stat().st_size, file_digest(tmp)
    )


def write_batch_shard(
    directory: Path,
    batch_index: int,
    batch_size: int,
    arrays: tuple[np.ndarray, ...],
    meta: list[dict[str, Any]],
    *,
    float16: bool = False,
    zstd_level: int = ZSTD_LEVEL,
    n_jobs: int = -1,
) -> dict[str, Any]:
    """Writes one generated batch (arrays as the core returns them) as a shard and its record.

    float32 shards are encoded by the Rust core straight from the padded arrays, their pages
    compressed on ``n_jobs`` threads; float16 shards go through pyarrow.
    """
    if float16:
        table = batch_table(batch_index, batch_size, arrays, meta, float16=True)
        return write_shard(
            directory, batch_index, table, _check_cells(batch_index, arrays[2], arrays[3]), zstd_level
        )
    from tabfm import _core

    X, y, d, seq_lens, train_sizes = arrays
    cells = _check_cells(batch_index, d, seq_lens)
    num_classes, cats, valid, metas, lineages = _columns_of_meta(meta)
    tmp = _tmp_shard(directory, batch_index)
    size, digest = _core.write_corpus_shard(
        tmp, X, y, d, seq_lens, train_sizes, batch_index, batch_size, num_classes, cats, valid, metas,
        lineages, _arrow_schema_b64(), ROW_GROUP, zstd_level, n_jobs,
    )  # fmt: skip
    return _publish(directory, batch_index, tmp, X.shape[0], cells, size, digest)


def read_record(directory: Path, batch_index: int) -> dict[str, Any] | None:
    path = directory / f"{shard_name(batch_index)}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise CorpusError(f"{path}: unreadable shard record ({e})") from None
