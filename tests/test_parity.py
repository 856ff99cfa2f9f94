"""Statistical parity of tabfm's SCM priors with TabICL 2.2.0 (``mlp_scm``, ``tree_scm``, ``mix_scm``).

What is compared
----------------
Both generators draw classification datasets with identical settings: ``max_seq_len=1024`` (every
dataset has 1024 rows), ``min_train_size = max_train_size = 0.5`` (512 train / 512 test rows),
``max_features=100``, ``min_features=2``, ``max_classes=10`` and ``batch_size_per_gp=1``. With one
dataset per group every dataset gets its own hyper-parameter draw, seq_len and train size are
constant, so the datasets of one side are i.i.d. and two-sample tests are valid. TabICL draws
N_TABICL = 256 datasets per prior (batches of 64, ``n_jobs=1``, in a pool of 2 spawned processes,
each task seeding torch / numpy / random once with its own fixed seed); tabfm draws
N_TABFM = 1024 per prior (it is ~50x cheaper, and a larger second sample buys power for free).
Both sides are seeded, so the test is deterministic; nothing is cached between runs.

Per-dataset summaries (:mod:`tabfm.prior.diagnostics`, computed identically on both sides):
realised classes, binary indicator, active features ``d``, has a low-cardinality column
(<= 20 distinct values among the active columns: TabICL emits no categorical flag, so the same
proxy is used on both sides), share of such columns, normalised class-balance entropy, and a
learnability score: 5-NN accuracy on the test rows (features standardised with train statistics)
minus the rate of the train-majority class on those rows.

Tests and thresholds
--------------------
Per prior, 7 summaries -> 7 tests; 21 tests in all:

- two-sample KS (``scipy.stats.ks_2samp``) for ``d``, ``low_card_share``, ``class_entropy``,
  ``knn_gain``;
- chi-square homogeneity test of the realised-class histogram (classes with an expected count
  < 5 pooled into their neighbour) for ``n_classes``;
- two-proportion z-tests (= 2x2 chi-square without continuity correction) for ``binary`` and
  ``has_low_card``.

Family-wise error 0.01 over the 21 tests, Bonferroni: each test fails if p < ALPHA = 0.01 / 21
= 4.8e-4. With n1 = 256, n2 = 1024 (sqrt(1/n1 + 1/n2) = 0.070):

- KS critical distance D = sqrt(-ln(ALPHA / 2) / 2) * 0.070 = 0.143 (for comparison: 0.17 at
  n = 256 / 256 and alpha = 0.001). Simulated power against a location shift of a normal
  summary: 57 % at 0.30 SD, 78 % at 0.35 SD, 92 % at 0.40 SD (minimum detectable effect at 80 %
  power ~ 0.36 SD).
- Two-proportion test: |z| > 3.49; at p = 0.5 the standard error is 0.035, so the minimum
  detectable difference is 0.12 (50 % power) / 0.15 (80 % power), Cohen's h ~ 0.30.

Effect sizes are bounded as well, independently of the p-values: the standardised mean
difference |mean_tabfm - mean_tabicl| / pooled SD for the continuous summaries and ``n_classes``,
and Cohen's h = |2 asin sqrt(p1) - 2 asin sqrt(p2)| for the shares, must be <= MAX_EFFECT = 0.30.
Both statistics have a null standard error of ~0.070, so 0.30 is 4.3 SE: a false alarm has
probability ~2e-5 per summary (~4e-4 over the 21), while a shift of 0.3 SD ("small-to-medium"
in Cohen's terms) is a deviation of the generator worth a look. A summary passes only if both its
test and its effect size pass.

Run ``pytest -s tests/test_parity.py`` to see the table (both sides' mean / median, statistic,
p-value, effect size). Budget: ~150 CPU-s of TabICL generation (3.7 / 10 / 4.5 datasets/s for
mlp / tree / mix at 1024 rows on one core), spread over 2 processes, plus ~20 s of tabfm and
summaries.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

pytestmark = pytest.mark.slow

PRIORS = ("mlp_scm", "tree_scm", "mix_scm")
SETTINGS = {
    "batch_size_per_gp": 1,
    "min_features": 2,
    "max_features": 100,
    "max_classes": 10,
    "max_seq_len": 1024,
    "min_train_size": 0.5,
    "max_train_size": 0.5,
}
BATCH = 64
N_TABICL = 256  # per prior
N_TABFM = 1024  # per prior
TABICL_TASKS = 2  # tasks per prior (the pool has 2 processes)
N_TESTS = 7 * len(PRIORS)
ALPHA = 0.01 / N_TESTS
MAX_EFFECT = 0.30

CONTINUOUS = ("d", "low_card_share", "class_entropy", "knn_gain")
PROPORTIONS = ("binary", "has_low_card")


# ---------------------------------------------------------------------------- drawing
def _draw_tabicl(prior: str, seed: int, n_batches: int) -> dict[str, np.ndarray]:
    """Runs in a spawned worker: seeds TabICL's three global RNGs once, draws ``n_batches``
    batches of ``BATCH`` datasets with ``n_jobs=1`` and returns their summaries."""
    import random
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    from tabfm.prior.diagnostics import concat_summaries, summarize_batch
    from tabicl.prior import PriorDataset as TabICLPrior

    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    ds = TabICLPrior(batch_size=BATCH, prior_type=prior, n_jobs=1, **SETTINGS)
    return concat_summaries([summarize_batch(*ds.get_batch()) for _ in range(n_batches)])


def _draw_tabfm(prior: str, seed: int, n: int) -> dict[str, np.ndarray]:
    from tabfm.prior import PriorDataset
    from tabfm.prior.diagnostics import concat_summaries, summarize_batch

    ds = PriorDataset(batch_size=BATCH, prior_type=prior, n_jobs=1, seed=seed, **SETTINGS)
    return concat_summaries([summarize_batch(*ds.get_batch(i)) for i in range(n // BATCH)])


@pytest.fixture(scope="module")
def summaries() -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """``{prior: {"tabicl": summaries, "tabfm": summaries}}``, drawn once for the module."""
    pytest.importorskip("tabicl")
    pytest.importorskip("sklearn")
    pytest.importorskip("scipy")
    from tabfm.prior.diagnostics import concat_summaries

    per_task = N_TABICL // BATCH // TABICL_TASKS
    assert per_task * BATCH * TABICL_TASKS == N_TABICL
    # Longest tasks first (mlp_scm), so that the two workers finish together.
    tasks = [(p, 1000 * (i + 1) + t, per_task) for t in range(TABICL_TASKS) for i, p in enumerate(PRIORS)]
    tasks.sort(key=lambda task: PRIORS.index(task[0]) != 0)
    ctx = multiprocessing.get_context("spawn")  # no fork of a process with live thread pools
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        futures = {task: pool.submit(_draw_tabicl, *task) for task in tasks}
        # tabfm is drawn here while the workers generate TabICL's datasets.
        ours = {p: _draw_tabfm(p, 7 + i, N_TABFM) for i, p in enumerate(PRIORS)}
        theirs = {
            p: concat_summaries([futures[task].result() for task in sorted(tasks) if task[0] == p])
            for p in PRIORS
        }
    return {p: {"tabicl": theirs[p], "tabfm": ours[p]} for p in PRIORS}


# ---------------------------------------------------------------------------- statistics
def _smd(a: np.ndarray, b: np.ndarray) -> float:
    """Standardised mean difference (b - a) / pooled SD (0 when both samples are constant)."""
    pooled = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    return 0.0 if pooled == 0 else float((b.mean() - a.mean()) / pooled)


def _two_proportion(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(z, two-sided p, Cohen's h) for the shares of ones in ``a`` and ``b``."""
    from scipy import stats

    p1, p2 = a.mean(), b.mean()
    pooled = (a.sum() + b.sum()) / (len(a) + len(b))
    se = np.sqrt(pooled * (1 - pooled) * (1 / len(a) + 1 / len(b)))
    z = 0.0 if se == 0 else float((p2 - p1) / se)
    h = float(2 * np.arcsin(np.sqrt(p2)) - 2 * np.arcsin(np.sqrt(p1)))
    return z, float(2 * stats.norm.sf(abs(z))), h


def _class_chi2(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Chi-square homogeneity test of two class-count histograms; categories whose expected count
    is < 5 on either side are merged into the next one (the last into the previous)."""
    from scipy import stats

    cats = np.union1d(a, b)
    table = np.array([[np.sum(a == c) for c in cats], [np.sum(b == c) for c in cats]], dtype=float)
    merged: list[np.ndarray] = []
    acc = np.zeros(2)
    for col in table.T:
        acc = acc + col
        expected = acc.sum() * table.sum(axis=1) / table.sum()
        if expected.min() >= 5:
            merged.append(acc)
            acc = np.zeros(2)
    if acc.sum() > 0:
        if merged:
            merged[-1] = merged[-1] + acc
        else:
            merged.append(acc)
    if len(merged) < 2:
        return 0.0, 1.0
    res = stats.chi2_contingency(np.array(merged).T, correction=False)
    return float(res.statistic), float(res.pvalue)


def compare(
    theirs: dict[str, np.ndarray],
    ours: dict[str, np.ndarray],
    names: tuple[str, ...] | None = None,
    proportions: tuple[str, ...] = PROPORTIONS,
    alpha: float = ALPHA,
) -> list[dict]:
    """One row per summary: both sides' mean / median, test, statistic, p-value, effect size.

    ``names`` defaults to the diagnostics summaries; ``proportions`` are tested as shares, ``n_classes``
    by chi-square, the rest by KS; a row is ok when p >= ``alpha`` and |effect| <= MAX_EFFECT."""
    from scipy import stats
    from tabfm.prior.diagnostics import SUMMARIES

    rows = []
    for name in names or tuple(SUMMARIES):
        a, b = theirs[name], ours[name]
        assert np.isfinite(a).all() and np.isfinite(b).all(), f"{name}: non-finite summaries"
        if name in proportions:
            test, effect_name = "2-prop z", "h"
            stat, p, effect = _two_proportion(a, b)
        elif name == "n_classes":
            test, effect_name = "chi2", "smd"
            stat, p = _class_chi2(a, b)
            effect = _smd(a, b)
        else:
            test, effect_name = "KS", "smd"
            res = stats.ks_2samp(a, b)
            stat, p, effect = float(res.statistic), float(res.pvalue), _smd(a, b)
        rows.append(
            {
                "summary": name,
                "test": test,
                "tabicl_mean": float(a.mean()),
                "tabicl_median": float(np.median(a)),
                "tabfm_mean": float(b.mean()),
                "tabfm_median": float(np.median(b)),
                "stat": stat,
                "p": p,
                "effect_name": effect_name,
                "effect": effect,
                "ok": bool(p >= alpha and abs(effect) <= MAX_EFFECT),
            }
        )
    return rows


def format_table(title: str, rows: list[dict], alpha: float = ALPHA) -> str:
    """Markdown table of :func:`compare` rows under ``title`` (which names both sides)."""
    lines = [
        f"\n{title}; fail if p < {alpha:.1e} or |effect| > {MAX_EFFECT}",
        "| summary | test | TabICL mean / median | tabfm mean / median | stat | p | effect | ok |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['summary']} | {r['test']} | {r['tabicl_mean']:.3f} / {r['tabicl_median']:.3f} | "
            f"{r['tabfm_mean']:.3f} / {r['tabfm_median']:.3f} | {r['stat']:.3f} | {r['p']:.2g} | "
            f"{r['effect_name']} {r['effect']:+.3f} | {'yes' if r['ok'] else 'NO'} |"
        )
    return "\n".join(lines)


def format_distributions(name: str, a: np.ndarray, b: np.ndarray) -> str:
    """Quantiles (and the histogram of small discrete summaries) of both sides, for diagnosis."""
    qs = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)
    out = [f"  {name} quantiles {qs}:", f"    TabICL {np.round(np.quantile(a, qs), 3).tolist()}"]
    out.append(f"    tabfm  {np.round(np.quantile(b, qs), 3).tolist()}")
    values = np.union1d(a, b)
    if len(values) <= 12:
        out.append(f"    values {values.tolist()}")
        out.append(f"    TabICL shares {np.round([np.mean(a == v) for v in values], 3).tolist()}")
        out.append(f"    tabfm  shares {np.round([np.mean(b == v) for v in values], 3).tolist()}")
    return "\n".join(out)


# ---------------------------------------------------------------------------- tests
@pytest.mark.parametrize("prior", PRIORS)
def test_prior_parity_with_tabicl(summaries, prior):
    theirs, ours = summaries[prior]["tabicl"], summaries[prior]["tabfm"]
    assert len(theirs["d"]) == N_TABICL and len(ours["d"]) == N_TABFM
    rows = compare(theirs, ours)
    table = format_table(f"{prior}: TabICL 2.2.0 (n={N_TABICL}) vs tabfm (n={N_TABFM})", rows)
    print(table)
    failed = [r["summary"] for r in rows if not r["ok"]]
    details = "\n".join(format_distributions(n, theirs[n], ours[n]) for n in failed)
    if failed:
        print(details)
    assert not failed, f"{prior}: tabfm deviates from TabICL 2.2.0 on {failed}\n{table}\n{details}"


def test_parity_checks_can_fail():
    """The comparison must flag a real deviation: a shifted copy of a sample fails, an
    independent draw of the same distribution passes."""
    pytest.importorskip("scipy")
    from tabfm.prior.diagnostics import SUMMARIES

    rng = np.random.default_rng(0)

    def draw(n, shift=0.0, p_bin=0.55):
        k = np.where(rng.random(n) < p_bin, 2, rng.integers(3, 11, n))
        return {
            "n_classes": k.astype(float),
            "binary": (k == 2).astype(float),
            "d": np.clip(np.round(rng.uniform(2, 100, n) + shift * 28), 1, 100),
            "has_low_card": (rng.random(n) < 0.4).astype(float),
            "low_card_share": rng.beta(0.5, 2.0, n),
            "class_entropy": rng.beta(5, 2, n),
            "knn_gain": rng.normal(-0.05 + shift * 0.1, 0.1, n),
        }

    same = compare(draw(N_TABICL), draw(N_TABFM))
    assert all(r["ok"] for r in same), format_table("null", same)
    shifted = {r["summary"]: r["ok"] for r in compare(draw(N_TABICL), draw(N_TABFM, shift=0.5, p_bin=0.35))}
    assert set(shifted) == set(SUMMARIES)
    assert not shifted["d"] and not shifted["knn_gain"] and not shifted["binary"] and not shifted["n_classes"]
