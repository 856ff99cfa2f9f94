"""Writing a corpus: this process's share of batch indices, generated on all cores while the
previous batch is compressed and written, each shard atomically, resumable without gaps or
duplicates, from any number of processes into one directory."""

from __future__ import annotations

import hashlib
import json
import queue
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tabfm.corpus._format import (
    CONFIG_TRACE,
    EFFECTIVE_CONFIG,
    FORMAT_VERSION,
    MANIFEST,
    SHARD_DIR,
    ZSTD_LEVEL,
    ZSTD_MAX_FAST,
    CorpusError,
    atomic_write_text,
    file_digest,
    read_record,
    shard_name,
    write_batch_shard,
)


def config_fingerprint(settings: Mapping[str, Any], float16: bool, zstd_level: int = ZSTD_LEVEL) -> str:
    """What defines the corpus content: every setting except the thread count, plus storage."""
    content = {k: v for k, v in settings.items() if k != "n_jobs"}
    storage = {"float16": float16, "zstd_level": zstd_level, "format": FORMAT_VERSION}
    blob = json.dumps({"settings": content, **storage}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Progress:
    """A one-line progress bar (datasets/s and ETA) on a terminal; silent otherwise."""

    def __init__(self, total: int, enabled: bool | None = None) -> None:
        self.total = total
        self.done = 0
        self.start = time.perf_counter()
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._last = 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if not self.enabled or (now - self._last < 0.2 and self.done < self.total):
            return
        self._last = now
        rate = self.done / max(now - self.start, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} datasets "
            f"{rate:,.1f}/s ETA {eta:,.0f}s "
        )
        if self.done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _yaml_dump(data: Any) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=True, default_flow_style=False)


def prepare_directory(
    out: Path,
    settings: Mapping[str, Any],
    trace: list[dict[str, Any]],
    float16: bool,
    resume: bool,
    zstd_level: int = ZSTD_LEVEL,
) -> None:
    """Creates the corpus directory, or checks that an existing one holds the same corpus.

    Several processes (ranks) may call this at once: the files written are identical for
    identical settings, and each is written atomically.
    """
    shards = out / SHARD_DIR
    meta_path = out / "corpus.json"
    fingerprint = config_fingerprint(settings, float16, zstd_level)
    if meta_path.exists():
        existing = json.loads(meta_path.read_text())
        if existing.get("fingerprint") != fingerprint:
            raise CorpusError(
                f"--out {str(out)!r} holds a corpus with other settings (fingerprint "
                f"{existing.get('fingerprint')}, this run {fingerprint}): choose another directory"
            )
        if (out / MANIFEST).exists() and not resume:
            raise CorpusError(
                f"--out {str(out)!r} already holds this complete corpus: pass --resume to check it"
            )
    elif out.exists():
        # Another rank may be creating the corpus right now: only foreign files are an error.
        ours = {"corpus.json", SHARD_DIR, EFFECTIVE_CONFIG, CONFIG_TRACE, MANIFEST}
        foreign = [p.name for p in out.iterdir() if p.name not in ours and ".tmp-" not in p.name]
        if foreign:
            raise CorpusError(
                f"--out {str(out)!r} is not empty and holds no tabfm corpus (found {foreign[0]!r}): "
                "choose an empty directory"
            )
    shards.mkdir(parents=True, exist_ok=True)
    info = {
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "float16": float16,
        "zstd_level": zstd_level,
        "num_batches": settings["num_batches"],
        "batch_size": settings["batch_size"],
        "prior_type": settings["prior_type"],
        "seed": settings["seed"],
    }
    atomic_write_text(meta_path, json.dumps(info, sort_keys=True, indent=1) + "\n")
    # The thread count is not part of the corpus (any value gives the same bytes).
    atomic_write_text(
        out / EFFECTIVE_CONFIG, _yaml_dump({k: v for k, v in settings.items() if k != "n_jobs"})
    )
    atomic_write_text(out / CONFIG_TRACE, _yaml_dump(trace))


def _remove_stale(shards: Path, mine: range) -> None:
    """Temporary files of an interrupted writer are garbage; only this process's batch indices
    are touched, so ranks writing concurrently keep theirs."""
    for index in mine:
        for tmp in shards.glob(f".{shard_name(index)}.*.tmp-*"):
            tmp.unlink(missing_ok=True)


def _is_complete(shards: Path, index: int) -> bool:
    record = read_record(shards, index)
    if record is None:
        return False
    path = shards / f"{shard_name(index)}.parquet"
    return (
        path.exists()
        and path.stat().st_size == record["bytes"]
        and file_digest(path) == record.get("xxh3_128")
    )


def generate_corpus(
    out: str | Path,
    settings: Mapping[str, Any],
    *,
    trace: list[dict[str, Any]] | None = None,
    rank: int = 0,
    world_size: int = 1,
    resume: bool = False,
    float16: bool = False,
    zstd_level: int = ZSTD_LEVEL,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Generates this process's batches (``rank, rank + world_size, ...``) of the corpus.

    ``settings`` are PriorDataset keyword arguments plus ``num_batches``. Returns a summary;
    writes ``manifest.json`` when the corpus is complete (whichever process finishes last).
    """
    from tabfm.prior import PriorDataset

    out = Path(out)
    num_batches = settings["num_batches"]
    prior_args = {k: v for k, v in settings.items() if k != "num_batches"}
    ds = PriorDataset(**prior_args)  # validates every argument before any file is touched
    if (
        isinstance(zstd_level, bool)
        or not isinstance(zstd_level, int)
        or not -ZSTD_MAX_FAST <= zstd_level <= 22
    ):
        raise ValueError(
            f"zstd_level={zstd_level!r} is invalid: zstd levels are ints from -{ZSTD_MAX_FAST} (fastest) to 22"
        )
    n_jobs = ds.n_jobs
    prepare_directory(out, settings, trace or [], float16, resume, zstd_level)
    shards = out / SHARD_DIR
    mine = range(rank, num_batches, world_size)
    # Other ranks may already be writing theirs; only this rank's own shards need --resume.
    if not resume and any(read_record(shards, i) is not None for i in mine):
        raise CorpusError(
            f"--out {str(out)!r} already holds shards of rank {rank}'s share of this corpus: "
            "pass --resume to continue it"
        )
    _remove_stale(shards, mine)
    todo = [i for i in mine if not (resume and _is_complete(shards, i))]
    bar = Progress(len(todo) * settings["batch_size"], progress)
    pending: queue.Queue = queue.Queue(maxsize=2)
    errors: list[BaseException] = []

    def writer() -> None:
        while True:
            item = pending.get()
            if item is None:
                return
            if errors:
                continue
            index, arrays, meta = item
            try:
                write_batch_shard(
                    shards,
                    index,
                    settings["batch_size"],
                    arrays,
                    meta,
                    float16=float16,
                    zstd_level=zstd_level,
                    n_jobs=n_jobs,
                )
                bar.update(len(meta))
            except BaseException as e:  # reported by the main thread
                errors.append(e)

    thread = threading.Thread(target=writer, name="tabfm-corpus-writer", daemon=True)
    thread.start()
    start = time.perf_counter()
    try:
        for index in todo:
            if errors:
                break
            # The core releases the GIL: the next batch is generated while this one is written.
            arrays = ds.get_batch_numpy(index, return_meta=True)
            pending.put((index, arrays[:5], arrays[5]))
    finally:
        pending.put(None)
        thread.join()
    if errors:
        raise errors[0]
    elapsed = time.perf_counter() - start
    manifest = finalize(out)
    return {
        "written_batches": len(todo),
        "skipped_batches": len(mine) - len(todo),
        "datasets_per_s": len(todo) * settings["batch_size"] / elapsed if todo and elapsed > 0 else None,
        "complete": manifest is not None,
        "manifest": manifest,
    }


def finalize(out: str | Path) -> dict[str, Any] | None:
    """Writes ``manifest.json`` if every shard of the corpus exists; returns it (else None).

    The manifest depends only on the shards, so concurrent finishers write identical files.
    """
    out = Path(out)
    info = json.loads((out / "corpus.json").read_text())
    shards = out / SHARD_DIR
    records = []
    for index in range(info["num_batches"]):
        record = read_record(shards, index)
        if record is None or not (shards / f"{shard_name(index)}.parquet").exists():
            return None
        records.append(record)
    cells = sum(r["active_cells"] for r in records)
    size = sum(r["bytes"] for r in records)
    manifest = {
        **info,
        "datasets": sum(r["datasets"] for r in records),
        "active_cells": cells,
        "bytes": size,
        "bytes_per_active_cell": size / cells if cells else None,
        "shards": records,
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest, sort_keys=True, indent=1) + "\n")
    return manifest
