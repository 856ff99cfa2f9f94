"""``tabfm filter``: the structural and learnability filters applied to a written corpus.

Structural checks replay the graph prior's target constraints from each dataset's lineage
(in-degree of the target, features on the target or its ancestors, counted over the emitted
columns); datasets of the SCM priors have no lineage and pass them. The learnability check runs
the out-of-bag ExtraTrees test on the stored X and y. The result is a new corpus with the
accepted datasets (same shard names, same order) and ``filter_manifest.json`` listing every
dataset with its verdict and reason.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from tabfm.corpus._format import SHARD_DIR, CorpusError, atomic_write_text, write_shard
from tabfm.corpus._writer import finalize


def structural_reason(
    lineage: dict[str, Any] | None, d: int, min_indegree: int, min_relevant: int, min_fraction: float
) -> str | None:
    if lineage is None:
        return None
    parents = lineage["parents"]
    if not parents:  # no structure passed the checks: the dataset is an invalid placeholder
        return "invalid"
    if len(parents[lineage["target_node"]]) < min_indegree:
        return "target_root"
    relevant = len(lineage["relevant_features"])
    need = max(min_relevant, math.ceil(min_fraction * d))
    if relevant >= need:
        return None
    if relevant == 0:
        return "no_feature_target_path"
    if relevant < min_relevant:
        return "insufficient_target_relevant_feature_count"
    return "insufficient_target_relevant_feature_fraction"


def filter_corpus(
    src: Path,
    out: Path,
    *,
    min_target_indegree: int = 1,
    min_target_relevant_features: int = 2,
    min_target_relevant_fraction: float = 0.05,
    learnability: bool = False,
    learnability_pvalue: float = 0.05,
    drop_invalid: bool = True,
) -> dict[str, Any]:
    import pyarrow as pa

    from tabfm import _core
    from tabfm.corpus._reader import ShardDataset

    if min_target_indegree < 0 or min_target_relevant_features < 0:
        raise ValueError("--min-target-indegree and --min-target-relevant-features must be >= 0")
    if not 0.0 <= min_target_relevant_fraction <= 1.0:
        raise ValueError(
            f"--min-target-relevant-fraction {min_target_relevant_fraction} is invalid: must be in [0, 1]"
        )
    if not 0.0 < learnability_pvalue <= 1.0:
        raise ValueError(f"--learnability-pvalue {learnability_pvalue} is invalid: must be in (0, 1]")
    summary_settings = {
        "min_target_indegree": min_target_indegree,
        "min_target_relevant_features": min_target_relevant_features,
        "min_target_relevant_fraction": min_target_relevant_fraction,
        "learnability": learnability,
        "learnability_pvalue": learnability_pvalue,
        "drop_invalid": drop_invalid,
    }
    reader = ShardDataset(src, batch_size=1, verify="digest")  # src must be a complete, intact corpus
    if out.exists() and any(out.iterdir()):
        raise CorpusError(f"--out {str(out)!r} is not empty: choose an empty directory")
    (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    verdicts = []
    counts: dict[str, int] = {}
    for shard, record in enumerate(reader.manifest["shards"]):
        table = reader.read_shard(shard)  # verified: schema, count, page checksums
        keep = np.zeros(table.num_rows, dtype=bool)
        cells = 0
        for i, row in enumerate(
            table.select(["dataset_index", "d", "seq_len", "valid", "lineage"]).to_pylist()
        ):
            lineage = json.loads(row["lineage"]) if row["lineage"] else None
            reason = "invalid" if drop_invalid and not row["valid"] else None
            if reason is None:
                reason = structural_reason(
                    lineage,
                    row["d"],
                    min_target_indegree,
                    min_target_relevant_features,
                    min_target_relevant_fraction,
                )
            if reason is None and learnability:
                n, k = row["seq_len"], row["d"]
                x = np.asarray(table.column("x")[i].values.to_numpy(zero_copy_only=False), dtype=np.float32)
                y = np.asarray(table.column("y")[i].values.to_numpy(zero_copy_only=False), dtype=np.float32)
                classification = table.column("num_classes")[i].as_py() is not None
                if classification:
                    _, codes = np.unique(y.astype(np.int64), return_inverse=True)
                    y = codes.astype(np.float32)
                res = _core.learnability(
                    np.ascontiguousarray(x.reshape(n, k)), y, classification, seed=row["dataset_index"]
                )
                if res["pvalue"] >= learnability_pvalue:
                    reason = "unpredictable"
            keep[i] = reason is None
            if reason is None:
                cells += row["seq_len"] * row["d"]
            else:
                counts[reason] = counts.get(reason, 0) + 1
            verdicts.append(
                {"dataset_index": row["dataset_index"], "accepted": reason is None, "reason": reason}
            )
        write_shard(out / SHARD_DIR, record["batch_index"], table.filter(pa.array(keep)), cells)
    info = json.loads((src / "corpus.json").read_text())
    info["filtered_from"] = str(src)
    # Positions saved on the source corpus must not resume on the filtered one.
    blob = json.dumps({"source": info["fingerprint"], "settings": summary_settings}, sort_keys=True)
    info["fingerprint"] = hashlib.sha256(blob.encode()).hexdigest()[:16]
    atomic_write_text(out / "corpus.json", json.dumps(info, sort_keys=True, indent=1) + "\n")
    for name in ("effective_config.yaml", "config_trace.yaml"):
        if (src / name).exists():
            atomic_write_text(out / name, (src / name).read_text())
    manifest = finalize(out)
    assert manifest is not None, "every shard was written"
    summary = {
        "datasets": len(verdicts),
        "accepted": int(sum(v["accepted"] for v in verdicts)),
        "rejected": dict(sorted(counts.items())),
        "settings": summary_settings,
    }
    atomic_write_text(
        out / "filter_manifest.json", json.dumps({**summary, "datasets_verdicts": verdicts}, indent=1) + "\n"
    )
    return summary
