"""Iteration, DataLoader workers, DDP sharding, exact resumption and pickling of the prior."""

from __future__ import annotations

import hashlib
import itertools
import pickle

import pytest
import torch
from tabfm.prior import PriorDataLoader, PriorDataset

SMALL = dict(
    batch_size=4, batch_size_per_gp=2, max_features=10, max_seq_len=64, min_seq_len=32, seed=7, n_jobs=2
)
TIMEOUT = 60  # seconds a DataLoader waits for a worker: a hang fails instead of blocking CI


def make(**overrides) -> PriorDataset:
    return PriorDataset(**{**SMALL, **overrides})


def digest(batch) -> str:
    h = hashlib.sha256()
    for t in batch[:5]:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def index_map(n: int, **overrides) -> dict[str, int]:
    """Digest of batch i -> i, for the first n global indices (independent of rank/position)."""
    ds = make(**overrides)
    table = {digest(ds.get_batch(i)): i for i in range(n)}
    assert len(table) == n, "distinct indices must give distinct batches"
    return table


def indices(batches, table: dict[str, int]) -> list[int]:
    return [table[digest(b)] for b in batches]


def loader(ds: PriorDataset, num_workers: int) -> PriorDataLoader:
    if num_workers:
        # Build the parent's thread pool before forking: the workers must not inherit a dead pool.
        ds.get_batch(0)
    return PriorDataLoader(ds, num_workers=num_workers, timeout=TIMEOUT if num_workers else 0)


# ------------------------------------------------------------------ plain iteration


def test_iteration_without_workers_is_get_batch_in_order() -> None:
    ds = make(num_batches=5)
    got = list(ds)
    assert len(got) == 5
    ref = make()
    for i, batch in enumerate(got):
        for a, b in zip(batch, ref.get_batch(i), strict=True):
            assert torch.equal(a, b)
    assert ds.position == 5


def test_endless_iteration_and_len() -> None:
    ds = make()
    table = index_map(7)
    assert indices(itertools.islice(iter(ds), 7), table) == list(range(7))
    with pytest.raises(TypeError, match="num_batches"):
        len(ds)


def test_num_batches_len_and_finite_iteration() -> None:
    ds = make(num_batches=6)
    assert len(ds) == 6
    ld = PriorDataLoader(ds)
    assert len(ld) == 6
    it = iter(ld)
    next(it), next(it)
    assert len(ld) == 4
    rest = list(it)
    assert len(rest) == 4
    assert len(ld) == 0
    assert list(ld) == []  # exhausted: nothing left to deliver


# ------------------------------------------------------------------ workers


@pytest.mark.parametrize("prior_type", ["mlp_scm", "graph_scm"])
@pytest.mark.parametrize("n", [6, 7])
def test_two_forked_workers_deliver_batches_in_order(n: int, prior_type: str) -> None:
    ds = make(num_batches=n, prior_type=prior_type)
    ld = loader(ds, num_workers=2)
    assert ld.multiprocessing_context == "fork"
    got = indices(list(ld), index_map(n, prior_type=prior_type))
    assert got == list(range(n))
    assert len(set(got)) == len(got)


def test_loader_can_be_iterated_again_after_partial_consumption() -> None:
    for num_workers in (0, 2):
        ds = make(num_batches=6)
        ld = loader(ds, num_workers)
        table = index_map(6)
        it = iter(ld)
        first = [next(it) for _ in range(2)]
        it.close()
        assert indices(first, table) == [0, 1]
        assert indices(list(ld), table) == [2, 3, 4, 5], num_workers


def test_spawn_worker_generates_the_same_batches() -> None:
    ds = make(num_batches=3)
    ld = PriorDataLoader(ds, num_workers=1, multiprocessing_context="spawn", timeout=TIMEOUT)
    assert indices(list(ld), index_map(3)) == [0, 1, 2]


def test_loader_argument_validation() -> None:
    with pytest.raises(TypeError, match="dataset"):
        PriorDataLoader([1, 2, 3])
    with pytest.raises(ValueError, match=r"num_workers=-1"):
        PriorDataLoader(make(), num_workers=-1)


# ------------------------------------------------------------------ DDP sharding


@pytest.mark.parametrize("prior_type", ["mlp_scm", "graph_scm"])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_ranks_get_disjoint_shards_covering_all_indices(num_workers: int, prior_type: str) -> None:
    n = 5
    table = index_map(2 * n, prior_type=prior_type)
    shards = []
    for rank in (0, 1):
        ds = make(num_batches=n, rank=rank, world_size=2, prior_type=prior_type)
        got = indices(list(loader(ds, num_workers)), table)
        assert got == list(range(rank, 2 * n, 2)), (rank, got)
        shards.append(got)
    assert set(shards[0]).isdisjoint(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(2 * n))


def test_global_index() -> None:
    ds = make(rank=2, world_size=3)
    assert [ds.global_index(p) for p in range(4)] == [2, 5, 8, 11]


def test_rank_and_world_size_from_environment(monkeypatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    table = index_map(8)
    ds = make(num_batches=3)
    assert indices(list(ds), table) == [1, 3, 5]
    assert ds.state_dict()["world_size"] == 2
    # Forked workers see the same environment.
    assert indices(list(loader(make(num_batches=3), 2)), table) == [1, 3, 5]
    # Explicit arguments win over the environment.
    assert indices(list(make(num_batches=3, rank=0, world_size=1)), table) == [0, 1, 2]


def test_inconsistent_environment_is_rejected(monkeypatch) -> None:
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "2")
    ds = make(num_batches=2)
    with pytest.raises(ValueError, match=r"(?s)(?=.*rank=3)(?=.*world_size=2)"):
        list(ds)


def test_environment_defaults_to_single_process(monkeypatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ds = make(num_batches=3)
    assert indices(list(ds), index_map(3)) == [0, 1, 2]
    assert ds.state_dict()["world_size"] == 1


# ------------------------------------------------------------------ resumption


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("k", [1, 3])
def test_state_dict_resume_equals_uninterrupted_run(num_workers: int, k: int) -> None:
    n = 7
    table = index_map(n)
    uninterrupted = indices(list(loader(make(num_batches=n), num_workers)), table)
    assert uninterrupted == list(range(n))

    ld = loader(make(num_batches=n), num_workers)
    it = iter(ld)
    first = [next(it) for _ in range(k)]
    state = ld.state_dict()
    it.close()
    assert set(state) == {"version", "position", "world_size", "fingerprint"}
    assert state["position"] == k and state["world_size"] == 1

    # A fresh process would build everything anew; the state goes through pickle like a checkpoint.
    state = pickle.loads(pickle.dumps(state))
    ld2 = loader(make(num_batches=n), num_workers)
    ld2.load_state_dict(state)
    assert len(ld2) == n - k
    rest = list(ld2)
    assert indices(first, table) + indices(rest, table) == uninterrupted


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_on_a_ddp_rank(num_workers: int) -> None:
    n, k = 5, 2
    table = index_map(2 * n)
    ld = loader(make(num_batches=n, rank=1, world_size=2), num_workers)
    it = iter(ld)
    first = [next(it) for _ in range(k)]
    state = ld.state_dict()
    it.close()
    assert state["world_size"] == 2
    ld2 = loader(make(num_batches=n, rank=1, world_size=2), num_workers)
    ld2.load_state_dict(state)
    assert indices(first, table) + indices(list(ld2), table) == [1, 3, 5, 7, 9]


def test_dataset_state_dict_resume_without_loader() -> None:
    table = index_map(6)
    ds = make(num_batches=6)
    it = iter(ds)
    first = [next(it) for _ in range(4)]
    state = ds.state_dict()
    assert state["position"] == 4
    ds2 = make(num_batches=6)
    ds2.load_state_dict(state)
    assert indices(first, table) + indices(list(ds2), table) == list(range(6))


def test_state_resumes_under_a_different_thread_count() -> None:
    # n_jobs changes speed, not data: a state saved with one thread count loads with another.
    ds = make(num_batches=4, n_jobs=1)
    it = iter(ds)
    next(it)
    other = make(num_batches=4, n_jobs=2)
    other.load_state_dict(ds.state_dict())
    assert indices(list(other), index_map(4)) == [1, 2, 3]


def test_load_state_dict_rejects_other_configuration() -> None:
    ds = make(num_batches=5)
    next(iter(ds))
    state = ds.state_dict()
    for other in (
        make(num_batches=5, seed=8),
        make(num_batches=5, max_features=11),
        make(prior_type="tree_scm"),
    ):
        with pytest.raises(ValueError, match="fingerprint"):
            other.load_state_dict(state)
        assert other.position == 0
        ld = PriorDataLoader(other)
        with pytest.raises(ValueError, match="fingerprint"):
            ld.load_state_dict(state)
        assert len(list(itertools.islice(iter(ld), 1))) == 1
        assert ld.state_dict()["position"] == 1  # the rejected state did not move it


def test_load_state_dict_rejects_other_world_size() -> None:
    ds = make(num_batches=5, rank=0, world_size=2)
    state = ds.state_dict(position=2)
    single = make(num_batches=5)
    with pytest.raises(ValueError, match=r"(?s)(?=.*world_size=2)(?=.*world_size=1)"):
        single.load_state_dict(state)
    with pytest.raises(ValueError, match=r"world_size=2"):
        PriorDataLoader(make(num_batches=5, rank=0, world_size=4)).load_state_dict(state)
    # The same world size (another rank) is accepted.
    peer = make(num_batches=5, rank=1, world_size=2)
    peer.load_state_dict(state)
    assert peer.position == 2


def test_load_state_dict_rejects_malformed_state() -> None:
    ds = make()
    good = ds.state_dict(position=3)
    with pytest.raises(ValueError, match="version"):
        ds.load_state_dict({**good, "version": 99})
    with pytest.raises(ValueError, match="position"):
        ds.load_state_dict({**good, "position": -1})
    with pytest.raises(ValueError, match="position"):
        ds.load_state_dict({**good, "position": 2.0})
    assert ds.position == 0
    ds.load_state_dict(good)
    assert ds.position == 3


# ------------------------------------------------------------------ pickling


@pytest.mark.parametrize("prior_type", ["mlp_scm", "tree_scm", "mix_scm", "graph_scm", "dummy"])
def test_pickle_round_trip_generates_identical_batches(prior_type: str) -> None:
    ds = make(prior_type=prior_type, num_batches=9)
    it = iter(ds)
    next(it), next(it)
    clone = pickle.loads(pickle.dumps(ds))
    assert clone is not ds and clone._engine is not ds._engine
    assert clone.fingerprint() == ds.fingerprint()
    assert clone.config == ds.config
    assert clone.position == 2 and len(clone) == 9
    for i in (0, 5):
        for a, b in zip(ds.get_batch(i, return_meta=True)[:5], clone.get_batch(i)[:5], strict=True):
            assert torch.equal(a, b)
    # Iteration continues where the original was.
    assert indices(list(clone), index_map(9, prior_type=prior_type)) == list(range(2, 9))


def test_engine_pickles_by_configuration() -> None:
    ds = make()
    engine = pickle.loads(pickle.dumps(ds._engine))
    assert engine.config_json == ds._engine.config_json
    a = engine.generate(3, 1, False)
    b = ds._engine.generate(3, 1, False)
    for u, v in zip(a[:5], b[:5], strict=True):
        assert u.tobytes() == v.tobytes()
