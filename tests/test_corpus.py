"""Corpora on disk: shards, manifest, resume, several writers, reading back on ranks and workers,
corruption, follow mode, filtering; the ``tabfm`` command line run from the installed package."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from tabfm.corpus import CorpusError, ShardDataset, generate_corpus
from tabfm.prior import PriorDataLoader, PriorDataset

TABFM = str(Path(sys.executable).with_name("tabfm"))  # the console script of the installed package
SETTINGS = dict(
    prior_type="mix_scm", batch_size=6, num_batches=5, seed=3, max_features=12, max_seq_len=64, n_jobs=2
)


def run(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([TABFM, *args], capture_output=True, text=True, timeout=300, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"tabfm {' '.join(args)} failed ({p.returncode}): {p.stderr}")
    return p


def tree_bytes(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    generate_corpus(out, SETTINGS, progress=False)
    return out


# ------------------------------------------------------------------ writing


def test_shards_hold_exactly_the_generated_batches(corpus: Path) -> None:
    manifest = json.loads((corpus / "manifest.json").read_text())
    assert manifest["datasets"] == 30 and len(manifest["shards"]) == 5
    ds = PriorDataset(**{k: v for k, v in SETTINGS.items() if k != "num_batches"})
    for record in manifest["shards"]:
        table = pq.read_table(corpus / record["file"])  # plain pyarrow opens a shard
        X, y, d, seq_lens, train_sizes, meta = ds.get_batch_numpy(record["batch_index"], return_meta=True)
        assert table.column("dataset_index").to_pylist() == [record["batch_index"] * 6 + i for i in range(6)]
        for i, row in enumerate(table.to_pylist()):
            n, k = row["seq_len"], row["d"]
            assert (n, k, row["train_size"]) == (seq_lens[i], d[i], train_sizes[i])
            np.testing.assert_array_equal(np.array(row["x"], np.float32).reshape(n, k), X[i, :n, :k])
            np.testing.assert_array_equal(np.array(row["y"], np.float32), y[i, :n])
            assert json.loads(row["meta"])["attempts"] == meta[i]["attempts"]
    assert (
        manifest["bytes_per_active_cell"] == pytest.approx(manifest["bytes"] / manifest["active_cells"])
        and 0 < manifest["bytes_per_active_cell"] < 8
    )


def test_float16_storage_is_smaller_and_close(tmp_path: Path, corpus: Path) -> None:
    generate_corpus(tmp_path, SETTINGS, float16=True, progress=False)
    small = json.loads((tmp_path / "manifest.json").read_text())
    full = json.loads((corpus / "manifest.json").read_text())
    assert small["bytes_per_active_cell"] < full["bytes_per_active_cell"]
    a = ShardDataset(tmp_path, 6).get_batch_numpy(1)[0]
    b = ShardDataset(corpus, 6).get_batch_numpy(1)[0]
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    "prior",
    [
        dict(prior_type="mix_scm", max_classes=10),  # categorical columns: empty and non-empty lists
        dict(prior_type="mlp_scm", regression=True),  # num_classes is null
        dict(prior_type="graph_scm", graph_config={"missingness": {"mechanism": "mcar", "rate": 0.2}}),
    ],
    ids=["mix_scm", "regression", "graph_scm"],
)
def test_rust_shard_writer_equals_the_arrow_table_of_the_batch(tmp_path: Path, prior: dict) -> None:
    """The core's Parquet encoder against pyarrow's reading of it: same table, schema, checksums."""
    from tabfm import _core
    from tabfm.corpus._format import batch_table, write_batch_shard

    ds = PriorDataset(batch_size=19, max_features=30, max_seq_len=200, seed=11, n_jobs=2, **prior)
    *arrays, meta = ds.get_batch_numpy(4, return_meta=True)
    record = write_batch_shard(tmp_path, 4, 19, tuple(arrays), meta)
    shard = tmp_path / "batch-000000004.parquet"
    handle = pq.ParquetFile(shard, page_checksum_verification=True)
    expected = batch_table(4, 19, tuple(arrays), meta, float16=False)
    table = handle.read()
    assert table.schema.equals(expected.schema, check_metadata=False)
    for name in expected.column_names:
        got, want = table.column(name).combine_chunks(), expected.column(name).combine_chunks()
        if name in ("x", "y"):  # bit patterns: missing cells are NaN, and NaN != NaN
            assert got.offsets.equals(want.offsets)
            bits = [np.asarray(a.values).view(np.uint32) for a in (got, want)]
            np.testing.assert_array_equal(*bits)
        else:
            assert got.equals(want), name
    assert handle.metadata.num_row_groups == 3  # 19 datasets, 8 per row group
    assert handle.metadata.row_group(0).column(7).compression == "ZSTD"
    assert record["bytes"] == shard.stat().st_size and record["xxh3_128"] == _core.file_digest(shard)
    if prior.get("regression"):
        assert table.column("num_classes").null_count == 19
    if prior["prior_type"] == "graph_scm":
        assert table.column("lineage").null_count == 0 and np.isnan(arrays[0]).any()
    if prior["prior_type"] == "mix_scm":
        lengths = [len(c) for c in table.column("categorical").to_pylist()]
        assert 0 in lengths and max(lengths) > 0


#: XXH3-128 of ``np.arange(300_000, dtype=np.uint32).tobytes() * 2``, from the reference
#: implementation (the ``xxhash`` package, ``xxh3_128_hexdigest``).
XXH3_128_BIG = "d7af50a07168c673c7089f4252e8e9ee"


def test_file_digest_matches_the_xxh3_128_reference_vectors(tmp_path: Path) -> None:
    from tabfm import _core

    (tmp_path / "empty").write_bytes(b"")
    assert _core.file_digest(tmp_path / "empty") == "99aa06d3014798d86001c324468d497f"
    # Past the 1 MiB read block, so the streaming hash is exercised across reads.
    big = np.arange(300_000, dtype=np.uint32).tobytes() * 2
    (tmp_path / "big").write_bytes(big)
    assert _core.file_digest(tmp_path / "big") == XXH3_128_BIG
    with pytest.raises(OSError, match="nowhere"):
        _core.file_digest(tmp_path / "nowhere")


def test_zstd_level_changes_bytes_not_content(tmp_path: Path, corpus: Path) -> None:
    generate_corpus(tmp_path / "l9", SETTINGS, zstd_level=9, progress=False)
    info = json.loads((tmp_path / "l9" / "corpus.json").read_text())
    assert (
        info["zstd_level"] == 9
        and info["fingerprint"] != json.loads((corpus / "corpus.json").read_text())["fingerprint"]
    )
    assert (tmp_path / "l9/shards/batch-000000002.parquet").read_bytes() != (
        corpus / "shards/batch-000000002.parquet"
    ).read_bytes()
    for a, b in zip(ShardDataset(tmp_path / "l9", 6), ShardDataset(corpus, 6), strict=True):
        for u, v in zip(a, b, strict=True):
            assert u.equal(v)
    for bad in (23, -200000, 1.5, True):
        with pytest.raises(ValueError, match=f"zstd_level={bad!r} is invalid"):
            generate_corpus(tmp_path / "bad", SETTINGS, zstd_level=bad, progress=False)
    assert not (tmp_path / "bad").exists()  # rejected before any file is written


def test_reader_rejects_another_format_version(tmp_path: Path, corpus: Path) -> None:
    shutil.copytree(corpus, tmp_path / "c")
    info = json.loads((tmp_path / "c/corpus.json").read_text())
    (tmp_path / "c/corpus.json").write_text(json.dumps({**info, "format_version": 2}))
    with pytest.raises(CorpusError, match="corpus format version 2, this tabfm reads version 3"):
        ShardDataset(tmp_path / "c", 6)


def test_existing_corpus_needs_resume_and_same_settings(tmp_path: Path, corpus: Path) -> None:
    shutil.copytree(corpus, tmp_path / "c")
    with pytest.raises(CorpusError, match="pass --resume"):
        generate_corpus(tmp_path / "c", SETTINGS, progress=False)
    with pytest.raises(CorpusError, match="holds a corpus with other settings"):
        generate_corpus(tmp_path / "c", {**SETTINGS, "seed": 4}, resume=True, progress=False)
    result = generate_corpus(tmp_path / "c", SETTINGS, resume=True, progress=False)
    assert result["written_batches"] == 0 and result["skipped_batches"] == 5
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(CorpusError, match="is not empty and holds no tabfm corpus"):
        generate_corpus(tmp_path / "other", SETTINGS, progress=False)


def test_resume_regenerates_damaged_and_missing_shards(tmp_path: Path, corpus: Path) -> None:
    c = tmp_path / "c"
    shutil.copytree(corpus, c)
    (c / "manifest.json").unlink()
    (c / "shards" / "batch-000000001.json").unlink()  # interrupted between shard and record
    (c / "shards" / "batch-000000003.parquet").write_bytes(b"garbage")  # damaged shard
    (c / "shards" / ".batch-000000004.parquet.tmp-123").write_bytes(b"partial")  # stale temp file
    result = generate_corpus(c, SETTINGS, resume=True, progress=False)
    assert result["written_batches"] == 2 and result["complete"]
    assert tree_bytes(c) == tree_bytes(corpus)


def test_two_writers_make_the_single_process_corpus(tmp_path: Path, corpus: Path) -> None:
    out = tmp_path / "c"
    threads = [
        threading.Thread(
            target=generate_corpus, args=(out, SETTINGS), kwargs=dict(rank=r, world_size=2, progress=False)
        )
        for r in (0, 1)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert tree_bytes(out) == tree_bytes(corpus)


# ------------------------------------------------------------------ reading


def test_batches_have_the_requested_size_and_padding(corpus: Path) -> None:
    ds = ShardDataset(corpus, batch_size=4)
    assert len(ds) == 7  # 30 datasets: 7 full batches, the partial tail is dropped
    X, _, d, seq_lens, _ = ds.get_batch(3)
    assert X.shape[0] == 4 and X.shape[1] == int(seq_lens.max()) and X.shape[2] == int(d.max())
    for b in range(4):
        assert (X[b, :, int(d[b]) :] == 0).all() and (X[b, int(seq_lens[b]) :] == 0).all()
    with pytest.raises(IndexError, match="out of range"):
        ds.get_batch(7)


def _digests(batches) -> list[str]:
    return [b[0].numpy().tobytes().hex()[:64] + str(b[2].tolist()) for b in batches]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_ranks_and_workers_read_disjoint_batches_in_order(corpus: Path, num_workers: int) -> None:
    everything = _digests(ShardDataset(corpus, 3, rank=0, world_size=1).get_batch(i) for i in range(10))
    shards = []
    for rank in (0, 1):
        ds = ShardDataset(corpus, 3, rank=rank, world_size=2)
        got = _digests(PriorDataLoader(ds, num_workers=num_workers, timeout=60 if num_workers else 0))
        assert got == everything[rank::2]
        shards.append(got)
    assert sorted(shards[0] + shards[1]) == sorted(everything)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_state_dict_resumes_exactly(corpus: Path, num_workers: int) -> None:
    full = _digests(PriorDataLoader(ShardDataset(corpus, 2), num_workers=num_workers))
    loader = PriorDataLoader(ShardDataset(corpus, 2), num_workers=num_workers)
    it = iter(loader)
    first = _digests(next(it) for _ in range(5))
    state = loader.state_dict()
    del it
    resumed = PriorDataLoader(ShardDataset(corpus, 2), num_workers=num_workers)
    resumed.load_state_dict(state)
    assert first + _digests(resumed) == full
    with pytest.raises(ValueError, match="fingerprint does not match"):
        ShardDataset(corpus, 3).load_state_dict(state)


def test_corrupted_and_truncated_shards_name_the_file(tmp_path: Path, corpus: Path) -> None:
    c = tmp_path / "c"
    shutil.copytree(corpus, c)
    shard = c / "shards" / "batch-000000002.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    ds = ShardDataset(c, 6)
    assert ds.get_batch_numpy(1) is not None
    # The page checksums catch the flipped byte, which lies in the float cells (most of the
    # file), where the error names the column, the row group and the check that failed.
    with pytest.raises(
        CorpusError,
        match=r"batch-000000002.parquet: column x: row group \d+: page checksum mismatch .*corrupted",
    ):
        ds.get_batch_numpy(2)
    with pytest.raises(CorpusError, match=r"batch-000000002.parquet: checksum mismatch"):
        ShardDataset(c, 6, verify="digest").get_batch_numpy(2)
    shard.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(CorpusError, match=r"batch-000000002.parquet: unreadable Parquet .*truncated"):
        ShardDataset(c, 6).get_batch_numpy(2)
    with pytest.raises(CorpusError, match=r"batch-000000002.parquet: checksum mismatch"):
        ShardDataset(c, 6, verify="digest").get_batch_numpy(2)
    skipping = ShardDataset(c, 6, skip_corrupt=True)
    with pytest.warns(UserWarning, match="skipping corrupt shard: .*batch-000000002.parquet"):
        got = list(skipping)
    assert len(got) == 4  # batch 2 skipped, the others delivered
    shard.unlink()
    with pytest.raises(CorpusError, match="shard file is missing"):
        ShardDataset(c, 6).get_batch_numpy(2)


def test_tabfm_shards_are_decoded_by_the_core_exactly_as_arrow_reads_them(
    tmp_path: Path, corpus: Path, monkeypatch
) -> None:
    import tabfm.corpus._reader as reader

    # Batches of 4 over shards of 6 datasets (one row group each), and of 6 over shards of 20
    # (row groups of 8, 8 and 4): batches straddle shards and row groups and start inside
    # them, so lists are skipped and slots offset.
    wide = tmp_path / "wide"
    generate_corpus(wide, {**SETTINGS, "batch_size": 20, "num_batches": 2}, progress=False)
    assert pq.ParquetFile(wide / "shards" / "batch-000000000.parquet").num_row_groups == 3
    cases = [(corpus, 4), (wide, 6)]
    got = []
    for path, b in cases:
        fast = ShardDataset(path, b)
        assert fast._open(0)[3] is not None, "a tabfm shard did not take the core's decoder"
        got.append([fast.get_batch_numpy(i, return_meta=True) for i in range(len(fast))])
    monkeypatch.setattr(reader, "_fast_chunks", lambda handle: None)
    for (path, b), batches in zip(cases, got, strict=True):
        slow = ShardDataset(path, b)
        assert slow._open(0)[3] is None
        for i, g in enumerate(batches):
            want = slow.get_batch_numpy(i, return_meta=True)
            for a, w in zip(g[:5], want[:5], strict=True):
                assert a.dtype == w.dtype and a.shape == w.shape
                assert a.tobytes() == w.tobytes(), f"{path.name}: batch {i} differs from Arrow's reading"
            assert g[5] == want[5]
    # float16 shards come from pyarrow's writer: Arrow decodes them.
    monkeypatch.undo()
    half = tmp_path / "half"
    generate_corpus(half, SETTINGS, float16=True, progress=False)
    assert ShardDataset(half, 4)._open(0)[3] is None


def test_a_damaged_target_page_names_its_column_and_row_group(tmp_path: Path, corpus: Path) -> None:
    c = tmp_path / "c"
    shutil.copytree(corpus, c)
    shard = c / "shards" / "batch-000000001.parquet"
    md = pq.ParquetFile(shard).metadata
    rg = md.row_group(0)
    (y,) = [rg.column(j) for j in range(rg.num_columns) if rg.column(j).path_in_schema.startswith("y.")]
    data = bytearray(shard.read_bytes())
    data[y.data_page_offset + y.total_compressed_size - 2] ^= 0x10  # inside the page, past its header
    shard.write_bytes(bytes(data))
    with pytest.raises(
        CorpusError, match=r"batch-000000001.parquet: column y: row group 0: page checksum mismatch"
    ):
        ShardDataset(c, 6).get_batch_numpy(1)
    assert ShardDataset(c, 6).get_batch_numpy(0) is not None
    with pytest.warns(UserWarning, match="skipping corrupt shard: .*batch-000000001.parquet: column y"):
        assert ShardDataset(c, 6, skip_corrupt=True).get_batch_numpy(1) is None
    # In a shard of several row groups (20 datasets: 8, 8, 4), the error names the file's row
    # group, also for a batch whose first row group is another one (datasets 12-17).
    wide = tmp_path / "wide"
    generate_corpus(wide, {**SETTINGS, "batch_size": 20, "num_batches": 1}, progress=False)
    shard = wide / "shards" / "batch-000000000.parquet"
    rg = pq.ParquetFile(shard).metadata.row_group(2)
    (x,) = [rg.column(j) for j in range(rg.num_columns) if rg.column(j).path_in_schema.startswith("x.")]
    data = bytearray(shard.read_bytes())
    data[x.data_page_offset + x.total_compressed_size - 2] ^= 0x10
    shard.write_bytes(bytes(data))
    assert ShardDataset(wide, 6).get_batch_numpy(0) is not None
    with pytest.raises(CorpusError, match=r"batch-000000000.parquet: column x: row group 2: page checksum"):
        ShardDataset(wide, 6).get_batch_numpy(2)


def test_incomplete_corpus_needs_follow_mode(tmp_path: Path, corpus: Path) -> None:
    c = tmp_path / "c"
    shutil.copytree(corpus, c)
    (c / "manifest.json").unlink()
    for suffix in ("json", "parquet"):
        (c / "shards" / f"batch-000000004.{suffix}").rename(tmp_path / f"held.{suffix}")
    with pytest.raises(CorpusError, match="the corpus is incomplete"):
        ShardDataset(c, 6)
    with pytest.raises(TimeoutError, match=r"batch-000000004.parquet did not appear within timeout=0.5s"):
        ShardDataset(c, 6, follow=True, timeout=0.5).get_batch_numpy(4)

    def finish() -> None:
        time.sleep(0.5)
        for suffix in ("parquet", "json"):
            (tmp_path / f"held.{suffix}").rename(c / "shards" / f"batch-000000004.{suffix}")

    threading.Thread(target=finish).start()
    follow = ShardDataset(c, 6, follow=True, timeout=30)
    got = _digests(follow)
    assert got == _digests(ShardDataset(corpus, 6))


def test_reader_argument_errors(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="batch_size=0 is invalid"):
        ShardDataset(corpus, 0)
    with pytest.raises(ValueError, match="rank=2 is invalid: must be < world_size=2"):
        ShardDataset(corpus, 2, rank=2, world_size=2)
    with pytest.raises(FileNotFoundError, match="is not a tabfm corpus"):
        ShardDataset(tmp_path, 2)


def test_shards_open_in_pandas_polars_and_duckdb(corpus: Path) -> None:
    import duckdb
    import pandas as pd
    import polars as pl

    shard = corpus / "shards" / "batch-000000000.parquet"
    frame = pd.read_parquet(shard)
    assert list(frame.columns[:3]) == ["dataset_index", "batch_index", "position"] and len(frame) == 6
    pframe = pl.read_parquet(shard)
    assert pframe["d"].to_list() == frame["d"].tolist()
    n, cells = duckdb.sql(f"SELECT count(*), sum(seq_len * d) FROM '{corpus}/shards/*.parquet'").fetchall()[0]
    assert n == 30 and cells == json.loads((corpus / "manifest.json").read_text())["active_cells"]


# ------------------------------------------------------------------ the command line


def test_cli_generate_writes_config_trace_and_manifest(tmp_path: Path) -> None:
    cfg = tmp_path / "prior.yaml"
    cfg.write_text("max_features: 10\nmax_seq_len: 48\ngraph_config:\n  graph:\n    n_nodes_max: 6\n")
    out = tmp_path / "c"
    p = run(
        "generate", "--prior", "graph_scm", "--num-batches", "3", "--batch-size", "4", "--seed", "1",
        "--out", str(out), "--config", str(cfg), "--set", "graph_config.noise.family=laplace", "--n-jobs", "1",
    )  # fmt: skip
    summary = json.loads(p.stdout)
    assert summary["complete"] and summary["datasets"] == 12
    import yaml

    eff = yaml.safe_load((out / "effective_config.yaml").read_text())
    assert eff["max_features"] == 10 and eff["graph_config"]["graph"]["n_nodes_max"] == 6
    assert eff["graph_config"]["noise"]["family"] == "laplace"
    trace = {t["path"]: t["source"] for t in yaml.safe_load((out / "config_trace.yaml").read_text())}
    assert trace["max_features"].startswith("config:") and trace["batch_size"] == "cli"
    assert trace["graph_config.noise.family"] == "cli.set"
    meta = [
        json.loads(m)
        for m in pq.read_table(out / "shards" / "batch-000000000.parquet").column("lineage").to_pylist()
    ]
    assert all(m["noise_family"] == "laplace" and m["n_nodes"] <= 6 for m in meta)


def test_cli_ranks_union_equals_single_process(tmp_path: Path) -> None:
    args = [
        "generate",
        "--prior",
        "tree_scm",
        "--num-batches",
        "5",
        "--batch-size",
        "3",
        "--seed",
        "2",
        "--quiet",
    ]
    run(*args, "--out", str(tmp_path / "single"))
    procs = [
        subprocess.Popen(
            [TABFM, *args, "--out", str(tmp_path / "multi")],
            env={**os.environ, "RANK": str(r), "WORLD_SIZE": "2"},
        )
        for r in (0, 1)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    assert tree_bytes(tmp_path / "multi") == tree_bytes(tmp_path / "single")


def test_cli_sigkill_then_resume_is_byte_identical(tmp_path: Path) -> None:
    args = [
        "generate",
        "--prior",
        "mlp_scm",
        "--num-batches",
        "40",
        "--batch-size",
        "16",
        "--seed",
        "7",
        "--quiet",
    ]
    args += ["--set", "max_seq_len=256", "--set", "max_features=30", "--n-jobs", "1"]
    run(*args, "--out", str(tmp_path / "whole"))
    out = tmp_path / "killed"
    proc = subprocess.Popen([TABFM, *args, "--out", str(out)])
    deadline = time.monotonic() + 120
    while len(list((out / "shards").glob("*.json"))) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = len(list((out / "shards").glob("*.json")))
    assert 0 < written < 40, "killed mid-run"
    assert not (out / "manifest.json").exists()
    p = run(*args, "--out", str(out), "--resume", check=False)
    assert p.returncode == 0, p.stderr
    assert tree_bytes(out) == tree_bytes(tmp_path / "whole")


def test_cli_inspect_filter_hardware_benchmark(tmp_path: Path) -> None:
    out = tmp_path / "c"
    run("generate", "--prior", "graph_scm", "--num-batches", "2", "--batch-size", "8", "--out", str(out), "--quiet",
        "--set", "max_seq_len=128", "--set", "max_features=12", "--set", "graph_config=tabicl", "--set", "graph_config.missingness.mechanism=mcar",
        "--set", "graph_config.missingness.rate=0.2")  # fmt: skip
    summary = json.loads(run("inspect", str(out), "--plots", str(tmp_path / "plots")).stdout)
    assert summary["datasets"] == 16 and summary["d"]["max"] <= 12
    assert summary["missing_rate"]["mean"] == pytest.approx(0.2, abs=0.05)
    assert {p.name for p in (tmp_path / "plots").glob("*.png")} >= {
        "d.png",
        "seq_len.png",
        "reject_reasons.png",
    }
    res = json.loads(run("filter", str(out), "--out", str(tmp_path / "f")).stdout)
    verdicts = json.loads((tmp_path / "f" / "filter_manifest.json").read_text())["datasets_verdicts"]
    assert len(verdicts) == 16 and res["accepted"] == sum(v["accepted"] for v in verdicts)
    assert res["accepted"] < 16, "the tabicl preset lets some targets be roots: the filter removes them"
    assert len(ShardDataset(tmp_path / "f", 1)) == res["accepted"]
    hw = json.loads(run("hardware").stdout)
    assert hw["cpu_count"] >= 1 and "torch" in hw and isinstance(hw["cuda_devices"], list)
    bench = tmp_path / "bench.json"
    run("benchmark", "--prior", "dummy", "--threads", "1", "--batches", "1", "--batch-size", "4", "--max-seq-len", "64",
        "--json", str(bench))  # fmt: skip
    report = json.loads(bench.read_text())
    assert report["results"][0]["prior"] == "dummy" and report["results"][0]["datasets_per_s"] > 0
    slower = json.loads(bench.read_text())
    slower["results"][0]["datasets_per_s"] *= 100  # a baseline 100x faster: this run regressed
    (tmp_path / "base.json").write_text(json.dumps(slower))
    p = run("benchmark", "--prior", "dummy", "--threads", "1", "--batches", "1", "--batch-size", "4",
            "--max-seq-len", "64", "--baseline", str(tmp_path / "base.json"), check=False)  # fmt: skip
    assert p.returncode == 1 and json.loads(p.stdout)["baseline"]["comparisons"][0]["level"] == "fail"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "--out", "X"], "--num-batches is required"),
        (["generate", "--num-batches", "2", "--out", "X", "--batch-size", "0"], "--batch-size 0 is invalid"),
        (["generate", "--num-batches", "2", "--out", "X", "--set", "max_features"], "expected key=value"),
        (
            ["generate", "--num-batches", "2", "--out", "X", "--set", "max_feature=3"],
            "unknown setting 'max_feature'",
        ),
        (
            ["generate", "--num-batches", "2", "--out", "X", "--set", "max_features=-3"],
            "max_features=-3 is invalid",
        ),
        (["generate", "--num-batches", "2", "--out", "X", "--rank", "2", "--world-size", "2"], "--rank 2"),
        (
            ["generate", "--num-batches", "2", "--out", "X", "--config", "nope.yaml"],
            "nope.yaml: file does not exist",
        ),
        (["generate", "--num-batches", "2", "--out", "X", "--prior", "lstm"], "invalid choice: 'lstm'"),
        (["generate", "--num-batches", "2", "--out", "X", "--zstd-level", "30"], "zstd_level=30 is invalid"),
        (["inspect", "nowhere"], "is not a tabfm corpus"),
        (["bogus"], "invalid choice: 'bogus'"),
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    p = run(*args, check=False, cwd=tmp_path)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], p.stderr


@pytest.mark.parametrize("command", ["generate", "inspect", "filter", "benchmark", "hardware"])
def test_cli_help(command: str) -> None:
    p = run(command, "--help")
    assert "usage: tabfm " + command in p.stdout


# ------------------------------------------------------------------ review regressions


def test_a_rank_starting_late_joins_the_corpus(tmp_path: Path, corpus: Path) -> None:
    out = tmp_path / "c"
    generate_corpus(out, SETTINGS, rank=0, world_size=2, progress=False)
    assert not (out / "manifest.json").exists()
    generate_corpus(out, SETTINGS, rank=1, world_size=2, progress=False)  # no --resume needed
    assert tree_bytes(out) == tree_bytes(corpus)
    with pytest.raises(CorpusError, match="already holds shards of rank 1's share"):
        (out / "manifest.json").unlink()
        generate_corpus(out, SETTINGS, rank=1, world_size=2, progress=False)


def test_skipped_batches_count_towards_the_resume_position(tmp_path: Path, corpus: Path) -> None:
    c = tmp_path / "c"
    shutil.copytree(corpus, c)
    (c / "shards" / "batch-000000001.parquet").write_bytes(b"damaged")
    loader = PriorDataLoader(ShardDataset(c, 6, skip_corrupt=True), num_workers=0)
    with pytest.warns(UserWarning, match="skipping corrupt shard"):
        got = list(loader)
    assert len(got) == 4 and loader.state_dict()["position"] == 5


def test_all_failed_graph_datasets_do_not_crash_and_filter_drops_them(tmp_path: Path) -> None:
    graph = {
        "dataset": {"categorical_ratio_min": 1.0, "max_categorical_cardinality": 2},
        "filter": {"max_attempts": 1, "min_target_indegree": 0, "min_target_relevant_features": 0,
                   "min_target_relevant_fraction": 0.0},
    }  # fmt: skip
    settings = dict(prior_type="graph_scm", batch_size=16, num_batches=2, seed=0, min_features=1, max_features=1,
                    max_seq_len=8, n_jobs=1, graph_config=graph)  # fmt: skip
    out = tmp_path / "c"
    generate_corpus(out, settings, progress=False)
    X, _, d, _, _, meta = ShardDataset(out, 16).get_batch_numpy(0, return_meta=True)
    invalid = [b for b, m in enumerate(meta) if not m["valid"]]
    assert invalid and all(meta[b]["rejections"] for b in invalid)
    empty = [b for b in invalid if d[b] == 0]
    assert empty, "the all-constant fallback (which used to panic) is exercised"
    assert all((X[b] == 0).all() for b in empty)
    from tabfm.corpus._filter import filter_corpus

    for drop in (True, False):
        res = filter_corpus(out, tmp_path / f"f{drop}", drop_invalid=drop)
        assert res["datasets"] == 32
        filtered = json.loads((tmp_path / f"f{drop}" / "corpus.json").read_text())
        assert filtered["fingerprint"] != json.loads((out / "corpus.json").read_text())["fingerprint"]


def test_cli_invalid_yaml_is_one_line(tmp_path: Path) -> None:
    p = run(
        "generate",
        "--num-batches",
        "1",
        "--out",
        str(tmp_path / "c"),
        "--set",
        "max_features=[1,",
        check=False,
    )
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "invalid YAML" in p.stderr
