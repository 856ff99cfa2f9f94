"""The ``tabfm`` command line: generate, inspect and filter corpora, benchmark the priors,
pretrain and evaluate the in-context model, describe the hardware. ``tabfm COMMAND --help`` documents each command.

Bad arguments exit with status 2 and one line naming the problem.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, NoReturn


class UsageError(Exception):
    """A bad argument: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message}\n")


# ------------------------------------------------------------------ settings resolution


def prior_defaults() -> dict[str, Any]:
    """PriorDataset's keyword defaults (the ``default`` source of the trace)."""
    from tabfm.prior import PriorDataset

    sig = inspect.signature(PriorDataset.__init__)
    out = {
        k: p.default
        for k, p in sig.parameters.items()
        if k != "self" and p.default is not inspect.Parameter.empty
    }
    for k in ("scm_fixed_hp", "scm_sampled_hp"):
        out[k] = copy.deepcopy(dict(out[k]))
    for k in ("rank", "world_size", "device"):
        out.pop(k, None)  # process placement, not corpus content
    return out


def _parse_value(raw: str) -> Any:
    import yaml

    return yaml.safe_load(raw)


def _assign(
    settings: dict[str, Any], dotted: str, value: Any, source: str, trace: list[dict[str, Any]]
) -> None:
    parts = dotted.split(".")
    known = set(settings) | {"num_batches", "graph_config"}
    if parts[0] not in known:
        raise UsageError(f"--set {dotted}: unknown setting {parts[0]!r}; known settings are {sorted(known)}")
    target = settings
    for p in parts[:-1]:
        if target.get(p) is None:
            target[p] = {}
        if target is settings and p == "graph_config" and isinstance(target[p], str):
            from tabfm.prior._graph_config import as_graph_config

            target[p] = as_graph_config(target[p]).to_dict()  # a preset or YAML path, made editable
        if not isinstance(target[p], dict):
            raise UsageError(f"--set {dotted}: {p!r} is not a section")
        target = target[p]
    old = target.get(parts[-1])
    target[parts[-1]] = value
    trace.append({"path": dotted, "source": source, "old_value": old, "new_value": value})


def resolve_settings(
    config: str | None, sets: list[str], flags: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """defaults -> config file -> command-line flags -> --set; returns settings and trace."""
    import yaml

    settings = prior_defaults()
    settings["num_batches"] = None
    trace: list[dict[str, Any]] = []
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise UsageError(f"--config {config}: file does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise UsageError(f"--config {config}: expected a mapping of settings, got {type(data).__name__}")
        for key, value in data.items():
            _assign(settings, key, value, f"config:{path}", trace)
    for key, value in flags.items():
        if value is not None:
            _assign(settings, key, value, "cli", trace)
    for item in sets:
        if "=" not in item:
            raise UsageError(
                f"--set {item!r}: expected key=value (dotted keys, e.g. graph_config.noise.family=laplace)"
            )
        key, raw = item.split("=", 1)
        _assign(settings, key.strip(), _parse_value(raw), "cli.set", trace)
    if settings["num_batches"] is None:
        raise UsageError("--num-batches is required (or num_batches in --config)")
    if settings.get("prior_type") == "graph_scm":
        from tabfm.prior._graph_config import as_graph_config

        settings["graph_config"] = as_graph_config(settings.get("graph_config")).to_dict()
    elif settings.get("graph_config") is not None:
        raise UsageError("graph_config is only used with --prior graph_scm")
    if settings.get("graph_config") is None:
        settings.pop("graph_config", None)
    for k in ("scm_fixed_hp", "scm_sampled_hp"):  # YAML-friendly (tuples become lists)
        settings[k] = json.loads(json.dumps(settings[k], default=list))
    return settings, trace


def _env_rank(args) -> tuple[int, int]:
    rank = args.rank if args.rank is not None else int(os.environ.get("RANK", 0))
    world = args.world_size if args.world_size is not None else int(os.environ.get("WORLD_SIZE", 1))
    if world < 1 or not 0 <= rank < world:
        raise UsageError(f"--rank {rank} --world-size {world} are invalid: need 0 <= rank < world-size")
    return rank, world


# ------------------------------------------------------------------ commands


def cmd_generate(args) -> int:
    from tabfm.corpus import generate_corpus

    flags = {
        "prior_type": args.prior,
        "num_batches": args.num_batches,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "n_jobs": args.n_jobs,
    }
    settings, trace = resolve_settings(args.config, args.set or [], flags)
    rank, world = _env_rank(args)
    n = settings["num_batches"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UsageError(f"--num-batches {n!r} is invalid: must be an int >= 1")
    progress = False if args.quiet else None
    result = generate_corpus(
        args.out,
        settings,
        trace=trace,
        rank=rank,
        world_size=world,
        resume=args.resume,
        float16=args.float16,
        zstd_level=args.zstd_level,
        progress=progress,
    )
    m = result["manifest"]
    summary = {k: v for k, v in result.items() if k != "manifest"}
    if m is not None:
        summary.update(
            datasets=m["datasets"],
            bytes=m["bytes"],
            bytes_per_active_cell=None
            if m["bytes_per_active_cell"] is None
            else round(m["bytes_per_active_cell"], 3),
        )
    if not args.quiet:
        print(json.dumps(summary, sort_keys=True))
    return 0


def _load_meta(path: Path) -> list[dict[str, Any]]:
    """Per-dataset columns of a corpus (no X / y), shard by shard."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from tabfm.corpus import ShardDataset

    ds = ShardDataset(path, batch_size=1)
    rows = []
    for record in ds.manifest["shards"]:
        table = pq.read_table(
            path / record["file"],
            columns=[
                "dataset_index",
                "seq_len",
                "train_size",
                "d",
                "num_classes",
                "valid",
                "meta",
                "lineage",
                "x",
            ],
        )
        # Missing cells per dataset without materialising the cells as Python floats.
        x = table.column("x").combine_chunks()
        nan = np.asarray(pc.is_nan(pc.list_flatten(x)).to_numpy(zero_copy_only=False), dtype=bool)
        missing = np.bincount(np.asarray(pc.list_parent_indices(x))[nan], minlength=table.num_rows)
        cells = np.asarray(pc.list_value_length(x).fill_null(0))
        for i, r in enumerate(table.drop_columns(["x"]).to_pylist()):
            m = json.loads(r.pop("meta"))
            lineage = r.pop("lineage")
            r["missing_rate"] = float(missing[i] / cells[i]) if cells[i] else 0.0
            r["realised_classes"] = m.get("realised_classes")
            r["categorical"] = len(m.get("categorical_columns", []))
            r["attempts"] = m.get("attempts", 1)
            r["rejections"] = m.get("rejections", {})
            r["lineage"] = json.loads(lineage) if lineage else None
            rows.append(r)
    return rows


def _describe(values: list[float]) -> dict[str, float]:
    import numpy as np

    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return {}
    return {
        "mean": float(a.mean()),
        "min": float(a.min()),
        "p50": float(np.median(a)),
        "max": float(a.max()),
    }


def cmd_inspect(args) -> int:
    path = Path(args.path)
    rows = _load_meta(path)
    reasons: dict[str, int] = {}
    for r in rows:
        for k, v in r["rejections"].items():
            reasons[k] = reasons.get(k, 0) + v
    manifest = json.loads((path / "manifest.json").read_text())
    summary = {
        "datasets": len(rows),
        "invalid": sum(not r["valid"] for r in rows),
        "prior_type": manifest["prior_type"],
        "bytes": manifest["bytes"],
        "bytes_per_active_cell": manifest["bytes_per_active_cell"],
        "d": _describe([r["d"] for r in rows]),
        "seq_len": _describe([r["seq_len"] for r in rows]),
        "train_size": _describe([r["train_size"] for r in rows]),
        "realised_classes": _describe([r["realised_classes"] for r in rows if r["num_classes"] is not None]),
        "categorical_columns": _describe([r["categorical"] for r in rows]),
        "missing_rate": _describe([r["missing_rate"] for r in rows]),
        "attempts": _describe([r["attempts"] for r in rows]),
        "reject_reasons": dict(sorted(reasons.items())),
    }
    print(json.dumps(summary, indent=1, sort_keys=True))
    if args.plots:
        _plots(rows, summary, Path(args.plots))
    return 0


def _plots(rows: list[dict[str, Any]], summary: dict[str, Any], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise UsageError("--plots needs matplotlib: pip install matplotlib") from e
    out.mkdir(parents=True, exist_ok=True)
    panels = [
        ("d", [r["d"] for r in rows]),
        ("seq_len", [r["seq_len"] for r in rows]),
        ("realised_classes", [r["realised_classes"] for r in rows if r["realised_classes"] is not None]),
        ("missing_rate", [r["missing_rate"] for r in rows]),
    ]
    for name, values in panels:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.hist(values, bins=30, color="#4472c4")
        ax.set_title(f"{name} ({len(values)} datasets)")
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=100)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    reasons = summary["reject_reasons"] or {"none": 0}
    ax.barh(list(reasons), list(reasons.values()), color="#c44e52")
    ax.set_title("rejected attempts by reason")
    fig.tight_layout()
    fig.savefig(out / "reject_reasons.png", dpi=100)
    plt.close(fig)


def cmd_filter(args) -> int:
    from tabfm.corpus._filter import filter_corpus

    result = filter_corpus(
        Path(args.path),
        Path(args.out),
        min_target_indegree=args.min_target_indegree,
        min_target_relevant_features=args.min_target_relevant_features,
        min_target_relevant_fraction=args.min_target_relevant_fraction,
        learnability=args.learnability,
        learnability_pvalue=args.learnability_pvalue,
        drop_invalid=not args.keep_invalid,
    )
    print(json.dumps(result, sort_keys=True))
    return 0


def cmd_benchmark(args) -> int:
    from tabfm.prior import PriorDataset

    priors = args.prior or ["mlp_scm", "tree_scm", "mix_scm", "graph_scm"]
    threads = args.threads or [1, os.cpu_count() or 1]
    results = []
    for prior in priors:
        for n_jobs in threads:
            ds = PriorDataset(
                prior_type=prior,
                batch_size=args.batch_size,
                max_features=args.max_features,
                max_seq_len=args.max_seq_len,
                n_jobs=n_jobs,
                seed=args.seed,
            )
            ds.get_batch_numpy(0)  # warm-up: thread pool start
            cpu0, t0 = time.process_time(), time.perf_counter()
            for i in range(1, args.batches + 1):
                ds.get_batch_numpy(i)
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            n = args.batches * args.batch_size
            results.append(
                {
                    "prior": prior,
                    "threads": n_jobs,
                    "datasets": n,
                    "datasets_per_s": n / wall,
                    "datasets_per_cpu_s": n / cpu if cpu > 0 else None,
                }
            )
            if not args.json:
                print(f"{prior:<10} threads={n_jobs:<3} {n / wall:10.1f} datasets/s", file=sys.stderr)
    report: dict[str, Any] = {"results": results, "hardware": hardware_info()}
    status = 0
    if args.baseline:
        base = {(r["prior"], r["threads"]): r for r in json.loads(Path(args.baseline).read_text())["results"]}
        comparisons = []
        for r in results:
            b = base.get((r["prior"], r["threads"]))
            if b is None:
                continue
            change = 100.0 * (r["datasets_per_s"] / b["datasets_per_s"] - 1.0)
            level = "ok"
            if change < -args.fail_threshold_pct:
                level, status = "fail", 1
            elif change < -args.warn_threshold_pct:
                level = "warn"
            comparisons.append(
                {"prior": r["prior"], "threads": r["threads"], "change_pct": change, "level": level}
            )
        report["baseline"] = {"path": args.baseline, "comparisons": comparisons}
    text = json.dumps(report, indent=1, sort_keys=True)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return status


def hardware_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    }
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gb"] = round(pages * size / 2**30, 2)
    except (ValueError, OSError, AttributeError):
        info["memory_gb"] = None
    from tabfm import _core

    info["tabfm_threads"] = _core.available_threads()
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda_available"] = torch.cuda.is_available()
        info["cuda_devices"] = [
            {
                "index": i,
                "name": torch.cuda.get_device_name(i),
                "memory_gb": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 2),
            }
            for i in range(torch.cuda.device_count())
        ]
    except ImportError:
        info["torch"] = None
        info["cuda_available"] = False
        info["cuda_devices"] = []
    return info


def cmd_hardware(args) -> int:
    print(json.dumps(hardware_info(), indent=1, sort_keys=True))
    return 0


def cmd_pretrain(args) -> int:
    from tabfm.train import TrainConfig
    from tabfm.train.pretrain import pretrain

    sets = list(args.set or [])
    if args.checkpoint_dir is not None:
        sets.append(f"train.checkpoint_dir={args.checkpoint_dir}")
    cfg = TrainConfig.load(args.config, sets)
    result = pretrain(cfg)
    if int(os.environ.get("RANK", 0)) == 0:
        print(json.dumps(result, sort_keys=True))
    return 0


def cmd_evaluate(args) -> int:
    from tabfm.classifier import TabFMClassifier, load_model
    from tabfm.evaluation import DATASET_NAMES, baseline_models, evaluate, format_table, plot, summarise

    names = args.datasets.split(",") if args.datasets else None
    unknown = sorted(set(names or []) - set(DATASET_NAMES))
    if unknown:
        raise UsageError(f"--datasets {args.datasets}: unknown {unknown}; choose from {list(DATASET_NAMES)}")
    model = load_model(args.checkpoint)  # fails early, with the path, on a bad checkpoint
    models = {
        "tabfm": lambda: TabFMClassifier(
            model=model, n_estimators=args.n_estimators, device=args.device, random_state=args.seed
        )
    }
    models.update(baseline_models(args.seed))
    results = evaluate(models, datasets=names, n_splits=args.splits, seed=args.seed)
    summary = summarise(results)
    print(format_table(summary))
    if args.out is not None:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        results.to_csv(out / "results.csv", index=False)
        summary.to_csv(out / "summary.csv")
        plot(summary, out / "roc_auc.png")
        print(f"wrote {out / 'results.csv'}, {out / 'summary.csv'} and {out / 'roc_auc.png'}")
    return 0


# ------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    from tabfm.corpus._format import ZSTD_LEVEL

    p = _Parser(prog="tabfm", description="tabfm: synthetic priors for tabular foundation models.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    g = sub.add_parser("generate", help="write prior batches to Parquet shards", description=cmd_generate_doc)
    g.add_argument(
        "--prior", choices=["mlp_scm", "tree_scm", "mix_scm", "graph_scm", "dummy"], help="prior type"
    )
    g.add_argument("--num-batches", type=int, help="batches in the corpus (required unless in --config)")
    g.add_argument("--batch-size", type=int, help="datasets per batch (= per shard)")
    g.add_argument("--seed", type=int, help="corpus seed")
    g.add_argument("--out", required=True, help="corpus directory")
    g.add_argument("--config", help="YAML file of PriorDataset settings (graph_config as a nested mapping)")
    g.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a setting (dotted keys, repeatable)"
    )
    g.add_argument("--n-jobs", type=int, help="threads (-1: all cores; default -1)")
    g.add_argument("--rank", type=int, help="this process's rank (default: $RANK or 0)")
    g.add_argument("--world-size", type=int, help="number of writing processes (default: $WORLD_SIZE or 1)")
    g.add_argument("--resume", action="store_true", help="continue an interrupted corpus")
    g.add_argument(
        "--float16", action="store_true", help="store X as float16 (lossy; default lossless float32)"
    )
    g.add_argument(
        "--zstd-level",
        type=int,
        default=ZSTD_LEVEL,
        help=f"zstd level of the shards (negative: faster, larger; 1 to 22: smaller; default {ZSTD_LEVEL})",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    g.set_defaults(func=cmd_generate)

    i = sub.add_parser("inspect", help="summary statistics (and PNG plots) of a corpus")
    i.add_argument("path", help="corpus directory")
    i.add_argument(
        "--plots", metavar="DIR", help="write histograms of d, seq_len, classes, missing rate, rejections"
    )
    i.set_defaults(func=cmd_inspect)

    f = sub.add_parser("filter", help="apply structural and learnability filters to a corpus")
    f.add_argument("path", help="corpus directory")
    f.add_argument("--out", required=True, help="directory of the filtered corpus")
    f.add_argument("--min-target-indegree", type=int, default=1)
    f.add_argument("--min-target-relevant-features", type=int, default=2)
    f.add_argument("--min-target-relevant-fraction", type=float, default=0.05)
    f.add_argument("--learnability", action="store_true", help="also run the ExtraTrees learnability test")
    f.add_argument("--learnability-pvalue", type=float, default=0.05)
    f.add_argument("--keep-invalid", action="store_true", help="keep datasets marked valid=False")
    f.set_defaults(func=cmd_filter)

    b = sub.add_parser("benchmark", help="generation throughput per prior and thread count")
    b.add_argument(
        "--prior", action="append", choices=["mlp_scm", "tree_scm", "mix_scm", "graph_scm", "dummy"]
    )
    b.add_argument(
        "--threads", action="append", type=int, help="thread counts (repeatable; default 1 and all)"
    )
    b.add_argument("--batches", type=int, default=3)
    b.add_argument("--batch-size", type=int, default=32)
    b.add_argument("--max-features", type=int, default=100)
    b.add_argument("--max-seq-len", type=int, default=1024)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json", metavar="FILE", help="also write the report here")
    b.add_argument("--baseline", metavar="FILE", help="a saved report to compare with")
    b.add_argument("--warn-threshold-pct", type=float, default=10.0)
    b.add_argument("--fail-threshold-pct", type=float, default=20.0)
    b.set_defaults(func=cmd_benchmark)

    pt = sub.add_parser(
        "pretrain",
        help="pretrain the in-context model on the prior (or a corpus)",
        description="Pretrain the in-context model from a YAML config (sections model, data, optim, "
        "train); resumes from the newest checkpoint in train.checkpoint_dir. Under torchrun each rank "
        "trains on its own share of the data (DDP).",
    )
    pt.add_argument("--config", required=True, help="YAML training config, e.g. configs/icl-tiny.yaml")
    pt.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a setting, e.g. optim.lr=3e-4 (repeatable)",
    )
    pt.add_argument("--checkpoint-dir", help="where checkpoints and logs go (train.checkpoint_dir)")
    pt.set_defaults(func=cmd_pretrain)

    ev = sub.add_parser(
        "evaluate",
        help="a checkpoint's classifier against baselines on real datasets",
        description="Run TabFMClassifier from a checkpoint and logistic regression, k-NN and gradient-"
        "boosted trees on real datasets that ship inside installed packages; repeated stratified splits; "
        "prints accuracy, ROC-AUC and log-loss.",
    )
    ev.add_argument("--checkpoint", required=True, help="checkpoint file or training run directory")
    ev.add_argument("--datasets", help="comma-separated dataset names (default: all available)")
    ev.add_argument("--splits", type=int, default=5, help="repeated train/test splits (default 5)")
    ev.add_argument("--n-estimators", type=int, default=8, help="ensemble members (default 8)")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--out", help="directory for results.csv, summary.csv and roc_auc.png")
    ev.set_defaults(func=cmd_evaluate)

    h = sub.add_parser("hardware", help="cores, memory, torch version, CUDA devices")
    h.set_defaults(func=cmd_hardware)
    return p


cmd_generate_doc = (
    "Write prior batches to zstd Parquet shards (one per batch), each atomically, with "
    "effective_config.yaml, config_trace.yaml and a manifest. Several processes (--rank/--world-size "
    "or torchrun's RANK/WORLD_SIZE) write disjoint batches into one corpus; --resume continues an "
    "interrupted run with no gaps and no duplicates."
)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("num_batches", "batch_size", "batches", "splits", "n_estimators"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            parser.exit(
                2, f"tabfm {args.command}: error: --{name.replace('_', '-')} {v} is invalid: must be >= 1\n"
            )
    import yaml

    from tabfm.corpus import CorpusError

    try:
        return args.func(args)
    except (UsageError, ValueError, TypeError, OSError, ImportError, CorpusError) as e:
        parser.exit(2, f"tabfm {args.command}: error: {e}\n")
    except yaml.YAMLError as e:
        parser.exit(2, f"tabfm {args.command}: error: invalid YAML: {' '.join(str(e).split())}\n")


if __name__ == "__main__":
    sys.exit(main())
