#!/usr/bin/env python
"""Markdown tables from a ``pytest benches --benchmark-json=FILE`` run.

Usage: ``python benches/report.py bench-results/prior.json``

Entries are matched by ``extra_info`` (impl, prior, threads), not by test name. Datasets per
second are ``datasets_per_call / mean round time`` (rounds draw different batches of different
cost, so the mean is the throughput). Speed-up targets: tabfm on one thread vs
TabICL 2.2.0 on one thread >= 100x for ``mlp_scm`` and ``mix_scm``, >= 30x for ``tree_scm``;
tabfm on two threads vs one thread >= 1.8x. Graph prior (``graph_scm``, from
``benches/test_graph_throughput.py``): tabfm on one thread vs TabICL 2.2.0 and vs dagzoo 0.20.0, each
on one thread, >= 100x (per core: datasets per second and datasets per CPU-second).
"""

from __future__ import annotations

import json
import sys
from typing import Any

PRIORS = ("mlp_scm", "tree_scm", "mix_scm")
TARGETS = {"mlp_scm": 100.0, "tree_scm": 30.0, "mix_scm": 100.0}
SCALING_TARGET = 1.8
GRAPH_PRIOR = "graph_scm"
GRAPH_PEERS = {"tabicl": "TabICL 2.2.0", "dagzoo": "dagzoo 0.20.0"}
GRAPH_TARGET = 100.0


def _rate(bench: dict[str, Any]) -> float | None:
    info, stats = bench.get("extra_info", {}), bench.get("stats") or {}
    per_call, mean = info.get("datasets_per_call"), stats.get("mean")
    if per_call and mean:
        return per_call / mean
    return info.get("datasets_per_s")


def _fmt(v: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "n/a" if v is None else f"{v:{spec}}{suffix}"


def _verdict(value: float | None, target: float) -> str:
    if value is None:
        return ""
    return " (met)" if value >= target else " (missed)"


def throughput_entries(data: dict[str, Any]) -> dict[tuple[str, str, int], dict[str, Any]]:
    out = {}
    for b in data.get("benchmarks", []):
        info = b.get("extra_info", {})
        if {"impl", "prior", "threads", "datasets_per_call"} <= info.keys():
            out[(info["impl"], info["prior"], int(info["threads"]))] = b
    return out


def main_table(data: dict[str, Any]) -> str:
    entries = throughput_entries(data)
    lines = [
        "| prior | TabICL ds/s | tabfm 1T ds/s | ratio | target | tabfm 2T ds/s | 2T/1T |",
        "|---|---|---|---|---|---|---|",
    ]
    for prior in PRIORS:
        tabicl = entries.get(("tabicl", prior, 1))
        one = entries.get(("tabfm", prior, 1))
        two = entries.get(("tabfm", prior, 2))
        r_tabicl = _rate(tabicl) if tabicl else None
        r_one = _rate(one) if one else None
        r_two = _rate(two) if two else None
        ratio = r_one / r_tabicl if r_one and r_tabicl else None
        scaling = r_two / r_one if r_two and r_one else None
        lines.append(
            f"| {prior} | {_fmt(r_tabicl, '.2f')} | {_fmt(r_one)} | "
            f"{_fmt(ratio, '.0f', 'x')}{_verdict(ratio, TARGETS[prior])} | >= {TARGETS[prior]:.0f}x | "
            f"{_fmt(r_two)} | {_fmt(scaling, '.2f', 'x')}{_verdict(scaling, SCALING_TARGET)} |"
        )
    lines.append("")
    lines.append(f"Target for 2T/1T: >= {SCALING_TARGET}x.")
    return "\n".join(lines)


def graph_table(data: dict[str, Any]) -> str | None:
    """tabfm vs TabICL and dagzoo on the graph prior, per core (all on one thread)."""
    entries = throughput_entries(data)
    if not any(prior == GRAPH_PRIOR for _, prior, _ in entries):
        return None
    one = entries.get(("tabfm", GRAPH_PRIOR, 1))
    two = entries.get(("tabfm", GRAPH_PRIOR, 2))
    r_one = _rate(one) if one else None
    r_two = _rate(two) if two else None
    cpu_one = one["extra_info"].get("datasets_per_cpu_s") if one else None
    lines = [
        "| peer (1T) | peer ds/s | peer ds per CPU-s | tabfm 1T ds/s | tabfm 1T ds per CPU-s "
        "| ratio ds/s | ratio per CPU-s | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for peer, name in GRAPH_PEERS.items():
        b = entries.get((peer, GRAPH_PRIOR, 1))
        r_peer = _rate(b) if b else None
        cpu_peer = b["extra_info"].get("datasets_per_cpu_s") if b else None
        ratio = r_one / r_peer if r_one and r_peer else None
        ratio_cpu = cpu_one / cpu_peer if cpu_one and cpu_peer else None
        lines.append(
            f"| {name} | {_fmt(r_peer, '.2f')} | {_fmt(cpu_peer, '.2f')} | {_fmt(r_one)} | {_fmt(cpu_one)} | "
            f"{_fmt(ratio, '.0f', 'x')}{_verdict(ratio, GRAPH_TARGET)} | "
            f"{_fmt(ratio_cpu, '.0f', 'x')}{_verdict(ratio_cpu, GRAPH_TARGET)} | >= {GRAPH_TARGET:.0f}x |"
        )
    scaling = r_two / r_one if r_two and r_one else None
    lines.append("")
    lines.append(
        f"tabfm 2T: {_fmt(r_two)} ds/s, 2T/1T {_fmt(scaling, '.2f', 'x')}"
        f"{_verdict(scaling, SCALING_TARGET)} (target >= {SCALING_TARGET}x)."
    )
    return "\n".join(lines)


def detail_table(data: dict[str, Any]) -> str:
    entries = throughput_entries(data)
    lines = [
        "| impl | prior | threads | rounds | mean s / batch | ds/s | ds per CPU-s | M cells/s | mean d | load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (impl, prior, threads), b in sorted(entries.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2])):
        info, stats = b["extra_info"], b.get("stats") or {}
        rate = _rate(b)
        cells = None
        if info.get("cells_per_s") is not None:
            cells = info["cells_per_s"] / 1e6
        load = f"{info.get('loadavg_1min_before', 0):.1f} -> {info.get('loadavg_1min_after', 0):.1f}"
        lines.append(
            f"| {impl} | {prior} | {threads} | {stats.get('rounds', 'n/a')} | {_fmt(stats.get('mean'), '.3f')} | "
            f"{_fmt(rate, '.2f')} | {_fmt(info.get('datasets_per_cpu_s'), '.2f')} | {_fmt(cells, '.2f')} | {_fmt(info.get('mean_d'), '.1f')} | {load} |"
        )
    return "\n".join(lines)


def corpus_table(data: dict[str, Any]) -> str | None:
    """Corpus benchmarks per prior: writing vs in-memory generation (target >= 0.9: the median
    of the per-round ratios of the paired benchmark), reading vs generating (target > 1)."""
    paired: dict[str, dict[str, Any]] = {}
    reads: dict[str, float | None] = {}
    for b in data.get("benchmarks", []):
        info = b.get("extra_info", {})
        prior = str(info.get("prior", ""))
        if not prior.startswith("corpus:"):
            continue
        name = prior.split(":", 1)[1]
        if info.get("impl") == "paired":
            paired[name] = info
        elif info.get("impl") == "read":
            reads[name] = _rate(b)
    rows = [
        "| prior | rounds | generate in memory ds/s | generate + write ds/s | write / generate, median of rounds "
        "(target >= 0.90) | per-round ratios | read back ds/s | read / generate (target > 1) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for prior in sorted(set(paired) | set(reads)):
        info = paired.get(prior, {})
        gen, write, w = (
            info.get(k) for k in ("generate_datasets_per_s", "write_datasets_per_s", "write_over_generate")
        )
        rounds = [g / t for g, t in zip(info.get("generate_s", []), info.get("write_s", []), strict=True)]
        read = reads.get(prior)
        rd = read / gen if gen and read else None
        rows.append(
            f"| {prior} | {len(rounds)} | {_fmt(gen)} | {_fmt(write)} | {_fmt(w, '.2f')} "
            f"({'met' if w and w >= 0.9 else 'missed'}) | {', '.join(f'{r:.2f}' for r in rounds)} "
            f"| {_fmt(read)} | {_fmt(rd, '.1f', 'x')} ({'met' if rd and rd > 1 else 'missed'}) |"
        )
    return "\n".join(rows) if paired or reads else None


def memory_line(data: dict[str, Any]) -> str:
    for b in data.get("benchmarks", []):
        info = b.get("extra_info", {})
        if "peak_rss_mb" in info:
            split = ""
            if "import_file_mb" in info:  # older result files lack the split
                split = f": {info['import_anon_mb']:.0f} anonymous, {info['import_file_mb']:.0f} file pages"
            return (
                f"Peak RSS drawing {info['batches']} batches of {info['batch_size']} "
                f"({info['prior']}, {info['threads']} threads, fresh process): "
                f"{info['peak_rss_mb']:.0f} MiB (after import {info['import_rss_mb']:.0f} MiB{split}, "
                f"X {info['x_per_batch_mb']:.0f} MiB per batch; limit 1 GB)."
            )
    return "Peak RSS: not measured."


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        data = json.load(f)
    machine = data.get("machine_info", {})
    cpu = machine.get("cpu", {}).get("brand_raw") or machine.get("processor") or "unknown CPU"
    entries = throughput_entries(data)
    print(f"Prior throughput, B=64, 1024 rows, <= 100 features ({cpu}, {data.get('datetime', '')})")
    print()
    if any(prior in PRIORS for _, prior, _ in entries):
        print(main_table(data))
        print()
    graph = graph_table(data)
    if graph is not None:
        print("Graph prior (graph_scm) throughput per core, 1024 rows, <= 100 features, <= 10 classes")
        print()
        print(graph)
        print()
    corpus = corpus_table(data)
    if corpus is not None:
        print("Corpus on disk (1024 rows, <= 100 features, all cores)")
        print()
        print(corpus)
        print()
    print(detail_table(data))
    print()
    print(memory_line(data))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
