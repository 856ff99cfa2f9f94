"""The in-context tabular learner: TabICL's three-stage architecture.

1. **Column-wise embedding** (:class:`ColumnEmbedding`): every column is a set of cells; an induced
   set transformer (ISAB blocks whose inducing points read the *training* rows only) turns each
   cell into a distribution-aware affine embedding ``cell * W + b``.
2. **Row-wise interaction** (:class:`RowInteraction`): per row, a transformer over the feature
   embeddings (rotary positions over columns, padded columns masked) with learnable CLS tokens;
   the CLS outputs, concatenated, are the row's vector.
3. **Dataset-wise in-context learning** (:class:`InContextLearner`): a transformer over rows in
   which every row attends to the labelled training rows only (their label embedding added), and
   a decoder predicts the classes of the test rows.

Shapes: ``X`` float ``(B, T, H)`` with the first ``train_size`` rows labelled, ``y_train`` int
``(B, train_size)``, ``d`` int ``(B,)`` active columns (the rest are padding). ``forward`` returns
logits ``(B, T - train_size, max_classes)``. A test row sees only training rows, so test rows can
be predicted in chunks with exactly the same result (the classifier relies on this).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ICLConfig:
    """Sizes of the in-context learner. ``ICLConfig.preset("tiny" | "small" | "base")``."""

    max_classes: int = 10
    embed_dim: int = 128
    col_blocks: int = 3
    col_heads: int = 4
    col_inducing: int = 128
    row_blocks: int = 3
    row_heads: int = 8
    row_cls: int = 4
    rope_base: float = 100_000.0
    icl_blocks: int = 12
    icl_heads: int = 4
    icl_ff: int = 1024
    ff_factor: int = 2  # feed-forward width of the column and row blocks, in units of embed_dim
    dropout: float = 0.0

    @property
    def icl_dim(self) -> int:
        return self.embed_dim * self.row_cls

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ICLConfig:
        if name not in PRESETS:
            raise ValueError(f"model preset={name!r} is invalid: choose one of {sorted(PRESETS)}")
        return replace(PRESETS[name], **overrides) if overrides else PRESETS[name]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ICLConfig:
        data = dict(data)
        preset = data.pop("preset", None)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"model: unknown field(s) {unknown}; allowed: {sorted(known | {'preset'})}")
        cfg = cls.preset(preset, **data) if preset is not None else cls(**data)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "dropout":
                if not isinstance(v, (int, float)) or not 0 <= v < 1:
                    raise ValueError(f"model.dropout={v!r} is invalid: a float in [0, 1)")
                continue
            if f.name == "rope_base":
                if not isinstance(v, (int, float)) or v <= 1:
                    raise ValueError(f"model.rope_base={v!r} is invalid: a number > 1")
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"model.{f.name}={v!r} is invalid: an int >= 1")
        if self.max_classes < 2:
            raise ValueError(f"model.max_classes={self.max_classes} is invalid: at least 2")
        for dim, heads, name in (
            (self.embed_dim, self.col_heads, "col_heads"),
            (self.embed_dim, self.row_heads, "row_heads"),
            (self.icl_dim, self.icl_heads, "icl_heads"),
        ):
            if dim % heads:
                raise ValueError(f"model.{name}={heads} is invalid: must divide the width {dim}")
        if (self.embed_dim // self.row_heads) % 2:
            raise ValueError(
                f"model.row_heads={self.row_heads} is invalid: rotary embeddings need an even head "
                f"width, embed_dim / row_heads = {self.embed_dim / self.row_heads}"
            )


PRESETS: dict[str, ICLConfig] = {
    # Trains on two laptop CPU cores in minutes.
    "tiny": ICLConfig(
        embed_dim=32,
        col_blocks=1,
        col_heads=2,
        col_inducing=16,
        row_blocks=1,
        row_heads=2,
        row_cls=2,
        icl_blocks=3,
        icl_heads=4,
        icl_ff=128,
    ),
    "small": ICLConfig(
        embed_dim=64,
        col_blocks=2,
        col_heads=4,
        col_inducing=64,
        row_blocks=2,
        row_heads=4,
        row_cls=4,
        icl_blocks=6,
        icl_heads=4,
        icl_ff=512,
    ),
    # TabICL's published size (about 27M parameters).
    "base": ICLConfig(),
}


# ---------------------------------------------------------------------------------------- blocks


def rotary(x: torch.Tensor, base: float) -> torch.Tensor:
    """Split-half rotary position embedding over dim -2 of ``(..., L, head_dim)``."""
    length, hd = x.shape[-2], x.shape[-1]
    half = hd // 2
    freqs = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = torch.arange(length, device=x.device, dtype=torch.float32)[:, None] * freqs
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    a, b = x[..., :half], x[..., half:]
    return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.0, rope_base: float | None = None):
        super().__init__()
        self.heads, self.dropout, self.rope_base = heads, dropout, rope_base
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        n, lq, dim = x.shape
        h = self.heads
        q = self.q(x).view(n, lq, h, dim // h).transpose(1, 2)
        k, v = self.kv(kv).view(n, kv.shape[1], 2, h, dim // h).permute(2, 0, 3, 1, 4)
        if self.rope_base is not None:
            q, k = rotary(q, self.rope_base), rotary(k, self.rope_base)
        o = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(o.transpose(1, 2).reshape(n, lq, dim))


class Block(nn.Module):
    """Pre-norm transformer block.

    Self-attention (``cross=False``): queries are all of ``x``, keys its first ``kv_len`` tokens
    (all of them by default). Cross-attention (``cross=True``): keys come from ``kv``, with their
    own norm.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        ff: int,
        dropout: float = 0.0,
        rope_base: float | None = None,
        cross: bool = False,
    ):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim) if cross else None
        self.attn = Attention(dim, heads, dropout, rope_base)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff, dim))

    def forward(
        self,
        x: torch.Tensor,
        kv: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        kv_len: int | None = None,
    ) -> torch.Tensor:
        q = self.norm_q(x)
        if self.norm_kv is not None:
            if kv is None:
                raise ValueError("a cross-attention block needs kv")
            k = self.norm_kv(kv)
        else:
            k = q if kv_len is None else q[:, :kv_len]
        x = x + self.attn(q, k, mask)
        return x + self.ff(self.norm_ff(x))


class InducedSetBlock(nn.Module):
    """ISAB: inducing points summarise the training rows, then every row reads the summary."""

    def __init__(self, dim: int, heads: int, n_inducing: int, ff: int, dropout: float):
        super().__init__()
        self.inducing = nn.Parameter(torch.randn(n_inducing, dim) * 0.02)
        self.gather = Block(dim, heads, ff, dropout, cross=True)
        self.scatter = Block(dim, heads, ff, dropout, cross=True)

    def forward(self, x: torch.Tensor, train_size: int) -> torch.Tensor:
        summary = self.gather(self.inducing.expand(x.shape[0], -1, -1), x[:, :train_size])
        return self.scatter(x, summary)


# ---------------------------------------------------------------------------------------- stages


class ColumnEmbedding(nn.Module):
    def __init__(self, cfg: ICLConfig):
        super().__init__()
        e = cfg.embed_dim
        self.inp = nn.Linear(1, e)
        self.blocks = nn.ModuleList(
            InducedSetBlock(e, cfg.col_heads, cfg.col_inducing, cfg.ff_factor * e, cfg.dropout)
            for _ in range(cfg.col_blocks)
        )
        self.norm = nn.LayerNorm(e)
        self.out_w = nn.Linear(e, e)
        self.out_b = nn.Linear(e, e)

    def forward(self, x: torch.Tensor, train_size: int) -> torch.Tensor:
        b, t, h = x.shape
        cells = x.transpose(1, 2).reshape(b * h, t, 1)
        src = self.inp(cells)
        for block in self.blocks:
            src = block(src, train_size)
        src = self.norm(src)
        emb = cells * self.out_w(src) + self.out_b(src)  # (B*H, T, E)
        return emb.view(b, h, t, -1).transpose(1, 2)  # (B, T, H, E)


class RowInteraction(nn.Module):
    def __init__(self, cfg: ICLConfig):
        super().__init__()
        e = cfg.embed_dim
        self.cls = nn.Parameter(torch.randn(cfg.row_cls, e) * 0.02)
        self.blocks = nn.ModuleList(
            Block(e, cfg.row_heads, cfg.ff_factor * e, cfg.dropout, cfg.rope_base)
            for _ in range(cfg.row_blocks)
        )
        self.norm = nn.LayerNorm(e)

    def forward(self, emb: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        b, t, h, e = emb.shape
        n_cls = self.cls.shape[0]
        tokens = torch.cat((self.cls.expand(b, t, n_cls, e), emb), dim=2).reshape(b * t, n_cls + h, e)
        # Padded columns (index >= d) are never attended to; CLS tokens always are.
        valid = torch.arange(n_cls + h, device=emb.device)[None, :] < (n_cls + d)[:, None]  # (B, L)
        mask = valid.repeat_interleave(t, dim=0)[:, None, None, :]
        for block in self.blocks:
            tokens = block(tokens, mask=mask)
        return self.norm(tokens[:, :n_cls]).reshape(b, t, n_cls * e)


class InContextLearner(nn.Module):
    def __init__(self, cfg: ICLConfig):
        super().__init__()
        dim = cfg.icl_dim
        self.max_classes = cfg.max_classes
        self.label_embedding = nn.Embedding(cfg.max_classes, dim)
        self.blocks = nn.ModuleList(
            Block(dim, cfg.icl_heads, cfg.icl_ff, cfg.dropout) for _ in range(cfg.icl_blocks)
        )
        self.norm = nn.LayerNorm(dim)
        self.decoder = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, cfg.max_classes))

    def forward(self, rows: torch.Tensor, y_train: torch.Tensor) -> torch.Tensor:
        train_size = y_train.shape[1]
        labels = F.pad(self.label_embedding(y_train), (0, 0, 0, rows.shape[1] - train_size))
        x = rows + labels
        for block in self.blocks:
            # Every row (train and test) reads the training rows only: test rows never see each
            # other, so predictions do not depend on which other test rows share the batch.
            x = block(x, kv_len=train_size)
        return self.decoder(self.norm(x[:, train_size:]))


class TabICLModel(nn.Module):
    """Column embedding -> row interaction -> in-context learning; see the module docstring."""

    def __init__(self, config: ICLConfig | None = None):
        super().__init__()
        self.config = config or ICLConfig()
        self.config.validate()
        self.col_embedding = ColumnEmbedding(self.config)
        self.row_interaction = RowInteraction(self.config)
        self.icl = InContextLearner(self.config)
        # PyTorch's default initialisation throughout (fan-in scaled; the label embedding at
        # unit scale, like the normalised row vectors it is added to). GPT-style std 0.02 was
        # tried: at these widths it shrinks the feature path and the model learns only class
        # frequencies for hundreds of steps.

    def forward(self, x: torch.Tensor, y_train: torch.Tensor, d: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"x has shape {tuple(x.shape)}: expected (batch, rows, features)")
        b, t, h = x.shape
        train_size = y_train.shape[1]
        if y_train.shape[0] != b or not 0 < train_size < t:
            raise ValueError(
                f"y_train has shape {tuple(y_train.shape)}: expected ({b}, train_size) with 0 < train_size < {t}"
            )
        if d is None:
            d = torch.full((b,), h, dtype=torch.long, device=x.device)
        rows = self.row_interaction(self.col_embedding(x, train_size), d)
        return self.icl(rows, y_train.long())

    def no_weight_decay(self) -> set[str]:
        """Parameters that are not regularised by weight decay (besides biases and norms)."""
        return {"row_interaction.cls", "icl.label_embedding.weight"} | {
            n for n, _ in self.named_parameters() if n.endswith("inducing")
        }

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
