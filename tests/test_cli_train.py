"""``tabfm pretrain`` and ``tabfm evaluate`` from the installed console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TABFM = shutil.which("tabfm", path=str(Path(sys.executable).parent)) or "tabfm"


def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.run([TABFM, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def pretrain(run_dir: Path, steps: int, sets: list[str]) -> subprocess.CompletedProcess:
    args = ["--config", "configs/icl-tiny.yaml", "--checkpoint-dir", str(run_dir)]
    return run("pretrain", *args, "--set", f"data.stages.0.steps={steps}", *sets)


def test_pretrain_resume_and_evaluate(tmp_path):
    run_dir = tmp_path / "run"
    sets = [
        "--set",
        "data.prior.prior_type=mix_scm",
        "--set",
        "data.prior.graph_config=null",
        "--set",
        "data.stages.0.batch_size=8",
        "--set",
        "data.stages.0.max_seq_len=64",
        "--set",
        "data.val_batches=1",
        "--set",
        "train.val_every=5",
        "--set",
        "train.checkpoint_every=5",
        "--set",
        "train.log_every=5",
    ]
    p = pretrain(run_dir, 10, sets)
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert result["step"] == 10 and result["datasets"] == 80
    assert "step     10/10" in p.stdout and (run_dir / "best.ckpt").is_file()
    assert list((run_dir / "tensorboard").glob("events.*"))
    # a longer run over the same directory resumes from step 10
    p = pretrain(run_dir, 15, sets)
    assert p.returncode == 0, p.stderr
    assert "resumed from" in p.stdout and json.loads(p.stdout.strip().splitlines()[-1])["step"] == 15

    out = tmp_path / "eval"
    p = run(
        "evaluate",
        "--checkpoint",
        str(run_dir),
        "--datasets",
        "iris,wine",
        "--splits",
        "2",
        "--n-estimators",
        "2",
        "--out",
        str(out),
    )
    assert p.returncode == 0, p.stderr
    for model in ("tabfm", "logreg", "knn", "gbdt"):
        assert model in p.stdout
    assert "mean" in p.stdout
    assert (out / "roc_auc.png").stat().st_size > 1000 and (out / "results.csv").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pretrain"], "--config"),
        (["pretrain", "--config", "missing.yaml"], "missing.yaml"),
        (["pretrain", "--config", "configs/icl-tiny.yaml", "--set", "optim.lr=-1"], "optim.lr=-1 is invalid"),
        (["pretrain", "--config", "configs/icl-tiny.yaml", "--set", "oops"], "expected key=value"),
        (["evaluate"], "--checkpoint"),
        (["evaluate", "--checkpoint", "nowhere.ckpt"], "does not exist"),
        (["evaluate", "--checkpoint", "icl-tiny", "--splits", "0"], "--splits 0 is invalid"),
        (["evaluate", "--checkpoint", "icl-tiny", "--datasets", "mnist"], "mnist"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, message):
    p = run(*args, timeout=120)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert message in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


@pytest.mark.parametrize("command", ["pretrain", "evaluate"])
def test_help(command):
    p = run(command, "--help", timeout=60)
    assert p.returncode == 0 and "usage: tabfm " + command in p.stdout
