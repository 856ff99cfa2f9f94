"""On-disk corpus format: one Parquet shard per generated batch, one row per dataset.

Layout of a corpus directory::

    effective_config.yaml    every PriorDataset argument as resolved (graph sections included)
    config_trace.yaml        where each setting came from: default, config file, --set, cli
    shards/batch-000000042.parquet   the datasets of batch 42 (zstd, page checksums)
    shards/batch-000000042.json      its record: datasets, active cells, bytes, sha256
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

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
SHARD_DIR = "shards"
MANIFEST = "manifest.json"
EFFECTIVE_CONFIG = "effective_config.yaml"
CONFIG_TRACE = "config_trace.yaml"
#: Datasets per Parquet row group: readers fetch row groups, so a partial read stays small.
ROW_GROUP = 8


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


def shard_name(batch_index: int) -> str:
    return f"batch-{batch_index:09d}"


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
    xs, ys, cats, metas, lineages = [], [], [], [], []
    for b in range(X.shape[0]):
        t, k = int(seq_lens[b]), int(d[b])
        xs.append(X[b, :t, :k].reshape(-1))
        ys.append(y[b, :t])
        m = dict(meta[b])
        lineage = m.pop("lineage", None)
        cats.append(np.asarray(m.get("categorical_columns", []), dtype=np.int32))
        metas.append(json.dumps(m, sort_keys=True))
        lineages.append(None if lineage is None else json.dumps(lineage, sort_keys=True))
    x_type = pa.float16() if float16 else pa.float32()
    if sum(len(v) for v in xs) >= 2**31:
        raise CorpusError(
            f"batch {batch_index} holds >= 2**31 active cells: too large for one shard; use a smaller --batch-size"
        )
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
        "num_classes": pa.array([m.get("num_classes") for m in meta], type=pa.int32()),
        "x": pa.ListArray.from_arrays(pa.array(offsets), x_values),
        "y": pa.ListArray.from_arrays(pa.array(y_offsets), y_values),
        "categorical": pa.array(cats, type=pa.list_(pa.int32())),
        "valid": pa.array([bool(m.get("valid", True)) for m in meta]),
        "meta": pa.array(metas, type=pa.string()),
        "lineage": pa.array(lineages, type=pa.string()),
    }
    return pa.table(cols, schema=schema(float16))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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


def write_shard(directory: Path, batch_index: int, table, active_cells: int) -> dict[str, Any]:
    """Writes one shard and its record, each atomically; returns the record.

    The record is renamed into place after the shard, so a shard without a record is an
    interrupted write and is regenerated on resume.
    """
    _, pq = _pa()
    name = shard_name(batch_index)
    final = directory / f"{name}.parquet"
    tmp = directory / f".{name}.parquet.tmp-{_writer_id()}"
    pq.write_table(
        table,
        tmp,
        compression="zstd",
        # Dictionary encoding of float cells costs 5x the write time and makes files larger.
        use_dictionary=False,
        row_group_size=ROW_GROUP,
        write_page_checksum=True,
        write_statistics=False,
    )
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    record = {
        "file": f"{SHARD_DIR}/{name}.parquet",
        "batch_index": batch_index,
        "datasets": table.num_rows,
        "active_cells": active_cells,
        "bytes": tmp.stat().st_size,
        "sha256": sha256_file(tmp),
    }
    os.replace(tmp, final)
    atomic_write_text(directory / f"{name}.json", json.dumps(record, sort_keys=True) + "\n")
    return record


def read_record(directory: Path, batch_index: int) -> dict[str, Any] | None:
    path = directory / f"{shard_name(batch_index)}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise CorpusError(f"{path}: unreadable shard record ({e})") from None
