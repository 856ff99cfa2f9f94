"""The in-context model: sizes, the invariances its design promises, and its errors."""

from __future__ import annotations

import pytest
import torch
from tabfm.models import PRESETS, ICLConfig, TabICLModel


@pytest.fixture(scope="module")
def model() -> TabICLModel:
    torch.manual_seed(0)
    m = TabICLModel(ICLConfig.preset("tiny"))
    # Random (not zero) biases, so that the invariances below are not met by accident.
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m.eval()


def batch(b=3, t=40, h=6, train=25, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, h, generator=g)
    y = torch.randint(0, 3, (b, train), generator=g)
    return x, y


def test_sizes():
    counts = {name: TabICLModel(cfg).num_parameters() for name, cfg in PRESETS.items()}
    assert 25e6 < counts["base"] < 29e6  # TabICL's published size is about 27M
    assert counts["tiny"] < 200_000 < counts["small"] < counts["base"]
    m = TabICLModel(ICLConfig.preset("base"))
    assert (
        m.config.icl_dim == 512
        and len(m.icl.blocks) == 12
        and m.col_embedding.blocks[0].inducing.shape == (128, 128)
    )


def test_output_shape(model):
    x, y = batch()
    out = model(x, y)
    assert out.shape == (3, 15, 10)


@torch.no_grad()
def test_test_rows_are_independent_so_chunks_are_exact(model):
    x, y = batch()
    full = model(x, y)
    first = model(x[:, :30], y)
    second = model(torch.cat((x[:, :25], x[:, 30:]), dim=1), y)
    torch.testing.assert_close(torch.cat((first, second), dim=1), full, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_order_of_training_rows_does_not_matter(model):
    x, y = batch()
    perm = torch.randperm(25, generator=torch.Generator().manual_seed(3))
    x2 = torch.cat((x[:, perm], x[:, 25:]), dim=1)
    torch.testing.assert_close(model(x2, y[:, perm]), model(x, y), rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_padded_columns_are_ignored(model):
    x, y = batch(h=6)
    d = torch.tensor([2, 4, 6])
    base = model(x, y, d)
    noisy = x.clone()
    for i, di in enumerate(d.tolist()):
        noisy[i, :, di:] = torch.randn(40, 6 - di) * 100  # garbage beyond d
    torch.testing.assert_close(model(noisy, y, d), base, rtol=1e-4, atol=1e-5)
    narrow = model(x[:1, :, :2], y[:1])  # dataset 0 alone, without padding
    torch.testing.assert_close(narrow, base[:1], rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_labels_of_the_context_change_the_prediction(model):
    x, y = batch()
    assert not torch.allclose(model(x, y), model(x, (y + 1) % 3))


def test_gradients_reach_every_parameter(model):
    x, y = batch()
    model.train()
    model.zero_grad()
    model(x, y).logsumexp(-1).sum().backward()
    model.eval()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"preset": "huge"}, "preset='huge'"),
        ({"embed_dim": 0}, "model.embed_dim=0"),
        ({"max_classes": 1}, "model.max_classes=1"),
        ({"icl_heads": 3}, "model.icl_heads=3"),
        ({"dropout": 1.5}, "model.dropout=1.5"),
        ({"depth": 3}, "unknown field"),
    ],
)
def test_bad_model_config(fields, message):
    with pytest.raises(ValueError, match=message):
        ICLConfig.from_dict(fields)


def test_bad_inputs(model):
    x, y = batch()
    with pytest.raises(ValueError, match="expected \\(batch, rows, features\\)"):
        model(x[0], y)
    with pytest.raises(ValueError, match="0 < train_size < 40"):
        model(x, torch.zeros(3, 40, dtype=torch.long))
