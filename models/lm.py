"""The prefix language model: a decoder-only transformer over VideoPoet's token sequences.

Attention is bidirectional over the condition prefix and causal over the output (the mask
is built by `prefix_mask`), text encoder states enter as vectors at the text slot through a
linear projection (with `text_global`, also their mean at every position), positions are
rotary (with `grid_positions`, visual tokens also get an embedding of their place in the
frame), attention is PyTorch SDPA. A static KV cache, set up once per batch shape
(`setup_caches`), serves incremental decoding (models/generate.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LMConfig:
    dim: int = 256
    n_layers: int = 4
    n_heads: int = 4
    vocab_size: int = 0  # set from the Vocab by the pipeline
    text_dim: int = 384  # all-MiniLM-L6-v2 states
    max_seq_len: int = 2048
    ffn_mult: float = 8 / 3  # SwiGLU hidden = mult * dim, rounded up to `multiple_of`
    multiple_of: int = 64
    rope_base: float = 10_000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    # the caption's mean state at every position: its words reach all tokens with no attention
    text_global: bool = False
    # learnt queries pooling the caption beside the mean, which blurs the one word of direction
    text_pool_heads: int = 0
    # embed each visual token's frame, row and column: rotary positions give distance, not place
    grid_positions: bool = False
    grid_size: tuple[int, int, int] = (0, 0, 0)  # (frames, rows, cols), set by the pipeline
    ffn_hidden: int = 0  # derived

    def __post_init__(self) -> None:
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} must be a multiple of n_heads {self.n_heads}")
        self.grid_size = tuple(int(n) for n in self.grid_size)  # a list when read from JSON
        hidden = int(self.ffn_mult * self.dim)
        self.ffn_hidden = -(-hidden // self.multiple_of) * self.multiple_of

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


# The paper does not publish its 1B/8B shapes: LLaMA-style ratios (head dim 128) that reach the
# named sizes with its 266,496-token vocabulary, untied embeddings included (`videopoet info`).
LM_PRESETS: dict[str, dict] = {
    "tiny": dict(dim=64, n_layers=2, n_heads=4),
    # the shipped checkpoint's LM, ~4.6M params
    "demo": dict(
        dim=256,
        n_layers=4,  # of head dim 64: more steps per minute on 2 CPU cores than 6 of 32
        n_heads=4,
        text_global=True,  # without it the LM ignores the motion words
        grid_positions=True,  # where a token is in the frame: where a motion starts
    ),
    "videopoet-1b": dict(dim=1280, n_layers=16, n_heads=10),
    "videopoet-8b": dict(dim=4096, n_layers=30, n_heads=32),
}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rope_tables(seq_len: int, head_dim: int, base: float) -> torch.Tensor:
    """(seq_len, 2, head_dim): cos and sin of each position's angles, each frequency twice
    (once per half of the head: the "rotate half" layout)."""
    freqs = 1.0 / base ** (torch.arange(0, head_dim, 2).float() / head_dim)
    angles = torch.outer(torch.arange(seq_len).float(), freqs).repeat(1, 2)  # (T, hs)
    return torch.stack([angles.cos(), angles.sin()], dim=1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (..., T, hs) rotated by each position's angles; cos, sin (T, hs)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.addcmul(x * cos, torch.cat([-x2, x1], dim=-1), sin)


class KVCache(nn.Module):
    """Keys and values of every position so far, in buffers sized once."""

    def __init__(self, batch: int, seq_len: int, n_heads: int, head_dim: int, dtype, device):
        super().__init__()
        shape = (batch, n_heads, seq_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """Write k, v (B, nh, T, hs) at `input_pos`: (T,) shared by the rows, or (B, T) each
        row's own (a continuous batch's rows stand at different steps). Returns the first B
        rows of the cache."""
        B = k.shape[0]
        k_cache, v_cache = self.k[:B], self.v[:B]
        if input_pos.dim() == 1:
            k_cache.index_copy_(2, input_pos, k)
            v_cache.index_copy_(2, input_pos, v)
        else:
            rows = torch.arange(B, device=k.device)[:, None]  # (B, 1) against (B, T)
            k_cache[rows, :, input_pos] = k.transpose(1, 2)  # (B, T, nh, hs)
            v_cache[rows, :, input_pos] = v.transpose(1, 2)
        return k_cache, v_cache


class Attention(nn.Module):
    def __init__(self, c: LMConfig):
        super().__init__()
        self.n_heads = c.n_heads
        self.head_dim = c.head_dim
        self.wqkv = nn.Linear(c.dim, 3 * c.dim, bias=False)
        self.wo = nn.Linear(c.dim, c.dim, bias=False)
        self.kv_cache: KVCache | None = None

    def forward(self, x, rope, mask, input_pos, kv_len):
        B, T, C = x.shape
        qkv = self.wqkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(qkv[:2], *rope).unbind(0)  # q and k rotated together: (B, nh, T, hs)
        v = qkv[2]
        if self.kv_cache is not None:
            k, v = self.kv_cache.update(input_pos, k, v)  # (B, nh, S_max, hs)
            if kv_len is not None:  # keys past kv_len are all masked: skip them
                k, v = k[:, :, :kv_len], v[:, :, :kv_len]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.wo(y.transpose(1, 2).reshape(B, T, C))


class FeedForward(nn.Module):
    def __init__(self, c: LMConfig):
        super().__init__()
        self.w13 = nn.Linear(c.dim, 2 * c.ffn_hidden, bias=False)
        self.w2 = nn.Linear(c.ffn_hidden, c.dim, bias=False)

    def forward(self, x):
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, c: LMConfig):
        super().__init__()
        self.attn_norm = RMSNorm(c.dim, c.norm_eps)
        self.attn = Attention(c)
        self.ffn_norm = RMSNorm(c.dim, c.norm_eps)
        self.ffn = FeedForward(c)

    def forward(self, x, rope, mask, input_pos, kv_len):
        x = x + self.attn(self.attn_norm(x), rope, mask, input_pos, kv_len)
        return x + self.ffn(self.ffn_norm(x))


class PrefixLM(nn.Module):
    def __init__(self, config: LMConfig):
        super().__init__()
        if config.vocab_size <= 0:
            raise ValueError("LMConfig.vocab_size must be set (from the Vocab)")
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.text_proj = nn.Linear(config.text_dim, config.dim)
        self.text_global = (
            nn.Linear(config.text_dim, config.dim, bias=False) if config.text_global else None
        )
        if config.text_pool_heads and not config.text_global:
            raise ValueError("text_pool_heads adds to the caption path: it needs text_global")
        k = config.text_pool_heads
        self.text_pool_score = nn.Linear(config.text_dim, k) if k else None
        self.text_pool = nn.Linear(k * config.text_dim, config.dim, bias=False) if k else None
        if config.grid_positions and min(config.grid_size) <= 0:
            raise ValueError(
                f"grid_positions needs a grid_size (frames, rows, cols); got {config.grid_size}"
            )
        # index 0 of each table: not a visual position (stays zero)
        self.grid = (
            nn.ModuleList(nn.Embedding(n + 1, config.dim, padding_idx=0) for n in config.grid_size)
            if config.grid_positions
            else None
        )
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self.register_buffer(
            "rope",
            rope_tables(config.max_seq_len, config.head_dim, config.rope_base),
            persistent=False,
        )
        self.max_batch_size = -1
        self.max_seq_len = -1

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """GPT-2-style init; residual output projections scaled down by depth."""
        std = 0.02
        for name, p in self.named_parameters():
            if p.dim() < 2:
                continue
            scale = (
                std / (2 * self.config.n_layers) ** 0.5
                if name.endswith(("wo.weight", "w2.weight"))
                else std
            )
            with torch.no_grad():
                p.normal_(0.0, scale, generator=generator)
        with torch.no_grad():
            self.text_proj.bias.zero_()
            if self.text_global is not None:  # starts as a model without the path
                self.text_global.weight.zero_()
            if self.text_pool is not None:  # likewise
                self.text_pool.weight.zero_()
                self.text_pool_score.bias.zero_()
            for table in self.grid or ():  # likewise
                table.weight.zero_()

    def setup_caches(self, max_batch_size: int, max_seq_len: int) -> None:
        """Allocate the static KV cache; a no-op when the current one is big enough."""
        if max_seq_len > self.config.max_seq_len:
            raise ValueError(
                f"sequence of {max_seq_len} tokens exceeds the model's context of "
                f"{self.config.max_seq_len}"
            )
        if self.max_batch_size >= max_batch_size and self.max_seq_len >= max_seq_len:
            return
        p = self.tok_embeddings.weight  # the LM's dtype, quantized or not
        for block in self.layers:
            block.attn.kv_cache = KVCache(
                max_batch_size,
                max_seq_len,
                self.config.n_heads,
                self.config.head_dim,
                p.dtype,
                p.device,
            )
        self.max_batch_size, self.max_seq_len = max_batch_size, max_seq_len

    def clear_caches(self) -> None:
        for block in self.layers:
            block.attn.kv_cache = None
        self.max_batch_size = self.max_seq_len = -1

    def embed(self, ids: torch.Tensor, text: torch.Tensor | None, text_slice: slice | None):
        """Token embeddings, with the projected text states written over the text slot."""
        x = self.tok_embeddings(ids)  # (B, T, C)
        if text is not None and text_slice is not None:
            x = x.clone()
            x[:, text_slice] = self.text_proj(text.to(x.dtype))
        return x

    def caption_vector(
        self, text: torch.Tensor | None, text_mask: torch.Tensor | None
    ) -> torch.Tensor | None:
        """(B, 1, C): the projected mean of each row's text states (B, L, D) over its mask (B, L),
        for `forward`'s `caption`; zeros for a row without text (so classifier-free guidance's
        unconditional rows get none). None when the model has no caption path or there is no text.
        """
        if self.text_global is None or text is None:
            return None
        m = text_mask[..., : text.shape[1]].to(text.dtype).unsqueeze(-1)  # (B, L, 1)
        mean = (text * m).sum(1) / m.sum(1).clamp_min(1.0)
        vec = self.text_global(mean.to(self.text_global.weight.dtype))
        if self.text_pool is not None:
            text = text.to(self.text_pool.weight.dtype)
            score = self.text_pool_score(text).masked_fill(m == 0, float("-inf"))  # (B, L, k)
            weight = torch.nan_to_num(score.softmax(dim=1))  # a row without text: all zero
            pooled = torch.einsum("blk,bld->bkd", weight, text).flatten(1)
            vec = vec + self.text_pool(pooled)
        return vec.unsqueeze(1)

    def grid_vector(self, coords: torch.Tensor) -> torch.Tensor:
        """(T, C): the embedding of each position's (latent frame, row, col) coords (T, 3); zero
        where the coords are -1 (not a visual position). Coords past the table count as its last
        entry (a layout larger than the one the LM was built for)."""
        out = 0
        for axis, table in enumerate(self.grid):
            index = (coords[..., axis] + 1).clamp(0, table.num_embeddings - 1)
            out = out + table(index)
        return out

    def layout_grid(self, layout, device: torch.device | str | None = None) -> torch.Tensor | None:
        """`forward`'s `grid` for a layout (its `grid_coords()` on device); None when the model has
        no grid positions."""
        if self.grid is None:
            return None
        return layout.grid_coords().to(device)

    def forward(
        self,
        x: torch.Tensor,
        input_pos: torch.Tensor,
        mask: torch.Tensor,
        kv_len: int | None = None,
        caption: torch.Tensor | None = None,
        grid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states (B, T, C) of embedded inputs x (B, T, C) at positions input_pos: (T,)
        for every row, or (B, T), each row's own (continuous batching, models/engine.py).

        mask (B, 1, T, K) bool: True where a query may attend a key. K is T without a cache;
        with one, K is the cache length, or `kv_len` when given (attention then reads only the
        first kv_len cached positions: eager decoding skips the empty rest of the cache).
        caption (B, 1, C): `caption_vector`, added at every position (the same at every step).
        grid (S, 3): `layout_grid` of the layout, every position's (indexed by input_pos); used
        when the model has `grid_positions`.
        """
        if caption is not None:
            x = x + caption.to(x.dtype)
        if self.grid is not None and grid is not None:
            x = x + self.grid_vector(grid[input_pos]).to(x.dtype)
        cos, sin = self.rope[input_pos].to(x.dtype).unbind(-2)  # (T, hs) or (B, T, hs) each
        if input_pos.dim() == 2:  # per row: broadcast over the heads, (B, 1, T, hs)
            cos, sin = cos[:, None], sin[:, None]
        for block in self.layers:
            x = block(x, (cos, sin), mask, input_pos, kv_len)
        return self.norm(x)

    def logits(self, h: torch.Tensor, lo: int = 0, hi: int | None = None) -> torch.Tensor:
        """Logits of the ids [lo, hi) only: sampling a visual position never scores audio ids."""
        if not isinstance(self.output, nn.Linear):  # models/quantize.py's Int8Linear
            return self.output(h, lo, hi).float()
        weight = self.output.weight[lo:hi]
        return F.linear(h, weight).float()

    def num_params(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.tok_embeddings.weight.numel()
        return n


def prefix_mask(key_valid: torch.Tensor, prefix_len: int, q_len: int | None = None) -> torch.Tensor:
    """(B, 1, T, S) bool: bidirectional over [0, prefix_len), causal after, invalid keys off.

    Query rows are positions 0..q_len-1 (default: all S). A query always sees itself or the
    first position, so no row is all False.
    """
    B, S = key_valid.shape
    T = S if q_len is None else q_len
    q = torch.arange(T, device=key_valid.device)[:, None]
    k = torch.arange(S, device=key_valid.device)[None, :]
    allowed = (k < prefix_len) | (k <= q)  # (T, S)
    return (allowed[None] & key_valid[:, None, :]).unsqueeze(1)
