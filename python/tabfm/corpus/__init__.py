"""Corpora on disk: prior batches written to Parquet shards and read back as training batches."""

from tabfm.corpus._format import SHARD_DIR, CorpusError, schema
from tabfm.corpus._reader import ShardDataset
from tabfm.corpus._writer import config_fingerprint, finalize, generate_corpus

__all__ = [
    "SHARD_DIR",
    "CorpusError",
    "ShardDataset",
    "config_fingerprint",
    "finalize",
    "generate_corpus",
    "schema",
]
