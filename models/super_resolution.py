"""The super-resolution stage: a non-autoregressive transformer in token space.

VideoPoet's LM generates at a low resolution; this model turns the low-resolution video tokens
into the tokens of the same clip at `scale` times the width and height (the paper: two such
stages of 2x), which the video tokenizer then decodes. Like the paper's, it is a bidirectional
transformer with local attention, conditioned on the low-resolution tokens and on the text, and
trained with masked-token prediction (MAGVIT / MaskGIT): a random share of the high-resolution
tokens is replaced by a mask code and the model predicts them. Sampling fills every token in a
few parallel steps (`sample`), keeping the most confident guesses of each step.

- Input: each high-resolution token's embedding (the mask code while unknown) plus the
  embedding of the low-resolution token whose cell it lies in (nearest upsampling: a low token
  covers scale x scale high ones) plus learnt frame, row and column embeddings.
- Blocks: attention along one axis of the (t, h, w) grid, the axes taken in turn (time, rows,
  columns: the paper's temporal, vertical and horizontal windows), in windows of at most
  `window` tokens along rows and columns (time: every latent frame); then cross-attention to
  the text states (projected), always beside a learnt null state, so that a row without text
  (classifier-free guidance) reads that alone; then SwiGLU.
- Output: LFQ codes split into `code_groups` sub-codes of equal bits, one softmax each (the
  paper factorizes its 2^18 codes into two of 2^9); a code's log-probability is their sum.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from models.lm import RMSNorm


@dataclass
class SRConfig:
    dim: int = 128
    n_layers: int = 6  # axes in turn: time, rows, columns, time, ...
    n_heads: int = 4
    codebook_bits: int = 10  # the video tokenizer's (set by the pipeline)
    code_groups: int = 1  # sub-codes of codebook_bits / code_groups bits, one softmax each
    text_dim: int = 384  # all-MiniLM-L6-v2 states
    grid: tuple[int, int, int] = (5, 16, 16)  # high-resolution latent (t, h, w) of one clip
    scale: int = 2  # a low-resolution token covers scale x scale high-resolution ones
    window: int = 16  # attention window along rows and columns, in tokens (time: all frames)
    ffn_mult: float = 8 / 3
    multiple_of: int = 32
    norm_eps: float = 1e-5
    steps: int = 8  # parallel decoding steps of `sample`
    guidance: float = 1.0  # the served stage's classifier-free guidance scale (1: off)
    text_drop: float = 0.1  # rows trained without their text (classifier-free guidance)

    def __post_init__(self) -> None:
        self.grid = tuple(int(n) for n in self.grid)  # a list when read from JSON
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} must be a multiple of n_heads {self.n_heads}")
        if self.codebook_bits % self.code_groups:
            raise ValueError(
                f"codebook_bits {self.codebook_bits} must split evenly into code_groups "
                f"{self.code_groups}"
            )
        t, h, w = self.grid
        if h % self.scale or w % self.scale:
            raise ValueError(f"grid {self.grid}: rows and columns must be multiples of scale")
        for n in (h, w):
            if n > self.window and n % self.window:
                raise ValueError(
                    f"grid {self.grid}: rows or columns longer than window {self.window} must "
                    "be a multiple of it"
                )

    @property
    def group_size(self) -> int:
        return 2 ** (self.codebook_bits // self.code_groups)

    @property
    def low_grid(self) -> tuple[int, int, int]:
        t, h, w = self.grid
        return (t, h // self.scale, w // self.scale)

    @property
    def ffn_hidden(self) -> int:
        hidden = int(self.ffn_mult * self.dim)
        return -(-hidden // self.multiple_of) * self.multiple_of

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_name(cls, name: str, **overrides) -> SRConfig:
        if name not in SR_PRESETS:
            raise ValueError(f"unknown SR preset {name!r}; one of {', '.join(SR_PRESETS)}")
        return cls(**{**SR_PRESETS[name], **overrides})


# The paper publishes no SR shapes; these are sized for their machines.
SR_PRESETS: dict[str, dict] = {
    "tiny": dict(dim=32, n_layers=3, n_heads=2, codebook_bits=8, grid=(5, 8, 8), window=8),
    # 64x64 -> 128x128 over the demo tokenizer's 1,024 codes: a few steps, each a fraction of
    # the LM's 320 sequential ones, on a CPU core
    "demo": dict(dim=128, n_layers=6, n_heads=4, codebook_bits=10, grid=(5, 16, 16)),
    # 128x128 -> 256x256 over 2^18 codes factorized into two of 2^9, as the paper does
    "videopoet-1b": dict(
        dim=1024, n_layers=12, n_heads=16, codebook_bits=18, code_groups=2, grid=(5, 32, 32)
    ),
}


class AxisAttention(nn.Module):
    """Bidirectional self-attention along one axis of the (t, h, w) grid, in windows."""

    def __init__(self, c: SRConfig, axis: str):
        super().__init__()
        self.axis, self.n_heads, self.window = axis, c.n_heads, c.window
        self.wqkv = nn.Linear(c.dim, 3 * c.dim, bias=False)
        self.wo = nn.Linear(c.dim, c.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, H, W, C = x.shape
        n = {"t": T, "h": H, "w": W}[self.axis]
        win = n if self.axis == "t" else min(n, self.window)
        # the axis last but one, cut into windows: (B * others * windows, win, C)
        pattern = {
            "t": "b (n k) h w c -> (b h w n) k c",
            "h": "b t (n k) w c -> (b t w n) k c",
            "w": "b t h (n k) c -> (b t h n) k c",
        }[self.axis]
        seq = rearrange(x, pattern, k=win)
        q, k, v = rearrange(
            self.wqkv(seq), "s k (three nh hs) -> three s nh k hs", three=3, nh=self.n_heads
        )
        y = rearrange(F.scaled_dot_product_attention(q, k, v), "s nh k hs -> s k (nh hs)")
        back = {
            "t": "(b h w n) k c -> b (n k) h w c",
            "h": "(b t w n) k c -> b t (n k) w c",
            "w": "(b t h n) k c -> b t h (n k) c",
        }[self.axis]
        sizes = {"t": dict(h=H, w=W), "h": dict(t=T, w=W), "w": dict(t=T, h=H)}[self.axis]
        return rearrange(self.wo(y), back, b=B, **sizes)


class CrossAttention(nn.Module):
    """Every token reads the text states (B, L, dim) whose `mask` (B, L) is True."""

    def __init__(self, c: SRConfig):
        super().__init__()
        self.n_heads = c.n_heads
        self.wq = nn.Linear(c.dim, c.dim, bias=False)
        self.wkv = nn.Linear(c.dim, 2 * c.dim, bias=False)
        self.wo = nn.Linear(c.dim, c.dim, bias=False)

    def forward(self, x: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q = rearrange(self.wq(x), "b n (nh hs) -> b nh n hs", nh=self.n_heads)
        k, v = rearrange(self.wkv(text), "b l (two nh hs) -> two b nh l hs", two=2, nh=self.n_heads)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        return self.wo(rearrange(y, "b nh n hs -> b n (nh hs)"))


class Block(nn.Module):
    def __init__(self, c: SRConfig, axis: str):
        super().__init__()
        self.attn_norm = RMSNorm(c.dim, c.norm_eps)
        self.attn = AxisAttention(c, axis)
        self.cross_norm = RMSNorm(c.dim, c.norm_eps)
        self.cross = CrossAttention(c)
        self.ffn_norm = RMSNorm(c.dim, c.norm_eps)
        self.w13 = nn.Linear(c.dim, 2 * c.ffn_hidden, bias=False)
        self.w2 = nn.Linear(c.ffn_hidden, c.dim, bias=False)

    def forward(self, x: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))  # (B, t, h, w, dim)
        B, T, H, W, C = x.shape
        flat = rearrange(x, "b t h w c -> b (t h w) c")
        flat = flat + self.cross(self.cross_norm(flat), text, mask)
        gate, up = self.w13(self.ffn_norm(flat)).chunk(2, dim=-1)
        flat = flat + self.w2(F.silu(gate) * up)
        return rearrange(flat, "b (t h w) c -> b t h w c", t=T, h=H, w=W)


class SuperResolution(nn.Module):
    def __init__(self, config: SRConfig):
        super().__init__()
        self.config = c = config
        g, k = c.group_size, c.code_groups
        self.mask_id = g  # each sub-code table has one more row: the mask code
        self.high_embed = nn.ModuleList(nn.Embedding(g + 1, c.dim) for _ in range(k))
        self.low_embed = nn.ModuleList(nn.Embedding(g, c.dim) for _ in range(k))
        self.pos_t, self.pos_h, self.pos_w = (nn.Embedding(n, c.dim) for n in c.grid)
        self.text_proj = nn.Linear(c.text_dim, c.dim)
        self.null_text = nn.Parameter(torch.zeros(1, 1, c.dim))
        axes = ("t", "h", "w")
        self.layers = nn.ModuleList(Block(c, axes[i % 3]) for i in range(c.n_layers))
        self.norm = RMSNorm(c.dim, c.norm_eps)
        self.output = nn.Linear(c.dim, k * g, bias=False)

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02, generator=generator)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.null_text, std=0.02, generator=generator)

    def split_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (...) in [0, 2**bits) -> sub-codes (..., code_groups), most significant first."""
        c = self.config
        bits = c.codebook_bits // c.code_groups
        shifts = torch.arange(c.code_groups - 1, -1, -1, device=codes.device) * bits
        return (codes[..., None] >> shifts) & (c.group_size - 1)

    def join_codes(self, sub: torch.Tensor) -> torch.Tensor:
        """sub-codes (..., code_groups) -> codes (...)."""
        c = self.config
        bits = c.codebook_bits // c.code_groups
        shifts = torch.arange(c.code_groups - 1, -1, -1, device=sub.device) * bits
        return (sub << shifts).sum(-1)

    def forward(
        self,
        high: torch.Tensor,
        low: torch.Tensor,
        text: torch.Tensor | None,
        text_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """high (B, t, h, w, groups) sub-codes, mask_id where unknown; low (B, t, h/s, w/s)
        codes; text (B, L, text_dim) with text_mask (B, L) True where a word is, or None (no
        text: the null state alone). -> logits (B, t, h, w, groups, group_size)."""
        c = self.config
        B, t = high.shape[:2]
        grid, low_grid = (t, *c.grid[1:]), (t, *c.low_grid[1:])
        if not 1 <= t <= c.grid[0] or tuple(high.shape[1:4]) != grid or low.shape[1:] != low_grid:
            raise ValueError(
                f"expected high (B, t, {c.grid[1]}, {c.grid[2]}, {c.code_groups}) and low "
                f"(B, t, {c.low_grid[1]}, {c.low_grid[2]}), t in 1..{c.grid[0]}; got "
                f"{tuple(high.shape)} and {tuple(low.shape)}"
            )
        x = sum(e(high[..., i]) for i, e in enumerate(self.high_embed))
        low_sub = self.split_codes(low)
        lo = sum(e(low_sub[..., i]) for i, e in enumerate(self.low_embed))
        lo = lo.repeat_interleave(c.scale, dim=2).repeat_interleave(c.scale, dim=3)
        t, h, w = (torch.arange(n, device=high.device) for n in grid)
        pos = (
            self.pos_t(t)[:, None, None] + self.pos_h(h)[None, :, None] + self.pos_w(w)[None, None]
        )
        x = x + lo + pos  # (B, t, h, w, dim)
        null = self.null_text.expand(B, 1, c.dim)
        if text is None:
            states = null
            mask = torch.ones(B, 1, dtype=torch.bool, device=high.device)
        else:
            states = torch.cat([null, self.text_proj(text.to(null.dtype))], dim=1)
            mask = torch.cat([torch.ones_like(text_mask[:, :1]), text_mask.bool()], dim=1)
        for block in self.layers:
            x = block(x, states, mask)
        logits = self.output(self.norm(x))
        return logits.unflatten(-1, (c.code_groups, c.group_size)).float()


def mask_schedule(r: torch.Tensor) -> torch.Tensor:
    """MaskGIT's cosine schedule: the share of tokens still masked at progress r in [0, 1]."""
    return torch.cos(math.pi / 2 * r)


def masked_loss(
    model: SuperResolution,
    high: torch.Tensor,
    low: torch.Tensor,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    generator: torch.Generator,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Masked-token prediction: each row masks a share cos(pi/2 u), u ~ U(0, 1), of its
    high-resolution tokens (at least one) and is scored on them; a `text_drop` share of the
    rows is trained without its text. high (B, t, h, w) codes, low (B, t, h/s, w/s).
    weight (B, t, h, w): each token's weight in the mean over the masked tokens (None: 1)."""
    c = model.config
    B = high.shape[0]
    N = math.prod(c.grid)
    dev = high.device
    u = torch.rand(B, generator=generator).to(dev)
    n_masked = (mask_schedule(u) * N).ceil().clamp(min=1)  # (B,)
    ranks = torch.rand(B, N, generator=generator).to(dev).argsort(1).argsort(1)
    masked = (ranks < n_masked[:, None]).view(B, *c.grid)  # (B, t, h, w)
    sub = model.split_codes(high)
    inputs = torch.where(masked[..., None], torch.full_like(sub, model.mask_id), sub)
    drop = (torch.rand(B, generator=generator) < c.text_drop).to(dev)
    text_mask = text_mask.bool() & ~drop[:, None]
    logits = model(inputs, low, text, text_mask)  # (B, t, h, w, groups, g)
    ce = F.cross_entropy(logits[masked].flatten(0, 1), sub[masked].flatten(), reduction="none")
    if weight is None:
        return ce.mean()
    w = weight.to(ce.dtype)[masked].repeat_interleave(c.code_groups)  # a token's sub-codes alike
    return (w * ce).sum() / w.sum()


@torch.no_grad()
def sample(
    model: SuperResolution,
    low: torch.Tensor,
    text: torch.Tensor | None,
    text_mask: torch.Tensor | None,
    seeds: list[int],
    *,
    steps: int | None = None,
    guidance: float = 1.0,
    temperature: float = 1.0,
    given: torch.Tensor | None = None,
    given_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """High-resolution codes (B, t, h, w) for low-resolution codes (B, t, h/s, w/s) (t up to
    the config's latent frames: a clip, a shorter window or an image), in
    `steps` parallel steps (default the config's). Each step guesses every unknown token (one
    draw per sub-code from the row's own generator, seeded by `seeds`: a row's output does not
    depend on the others), then keeps the most confident guesses (the sum of their sub-codes'
    log-probabilities, with noise that fades over the steps) so that a cos(pi/2 (s+1)/steps)
    share stays unknown. guidance > 1: classifier-free guidance against the null text;
    guidance 1 runs the conditional pass alone. temperature 0: the most likely codes.
    given (B, t, h, w) codes with given_mask (B, t, h, w) bool: tokens known from the start
    (an input tokenized at the high resolution), kept as they are; the steps' schedule then
    runs over each row's other tokens."""
    c = model.config
    grid = (low.shape[1], *c.grid[1:])  # an image or a short window: fewer latent frames
    B, N, dev = low.shape[0], math.prod(grid), low.device
    steps = steps or c.steps
    if len(seeds) != B:
        raise ValueError(f"one seed per row: {B} rows, {len(seeds)} seeds")
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    k, g = c.code_groups, c.group_size
    high = torch.full((B, *grid, k), model.mask_id, dtype=torch.long, device=dev)
    known = torch.zeros(B, N, dtype=torch.bool, device=dev)
    if given_mask is not None:
        if given is None or given.shape != (B, *grid) or given_mask.shape != (B, *grid):
            raise ValueError(f"given codes and given_mask must both be {(B, *grid)}")
        cells = given_mask.to(dev, torch.bool)
        high = torch.where(cells[..., None], model.split_codes(given.to(dev).long()), high)
        known = cells.flatten(1)
    unknown = [N - int(n) for n in known.sum(1)]  # per row: what the steps decide
    fixed = known.clone()
    guided = guidance != 1 and text is not None
    for s in range(steps):
        if guided:
            both = model(
                torch.cat([high, high]),
                torch.cat([low, low]),
                torch.cat([text, text]),
                torch.cat([text_mask.bool(), torch.zeros_like(text_mask, dtype=torch.bool)]),
            )
            cond, uncond = both[:B].log_softmax(-1), both[B:].log_softmax(-1)
            logits = uncond + guidance * (cond - uncond)
        else:
            logits = model(high, low, text, text_mask)
        logp = logits.flatten(1, 3).log_softmax(-1)  # (B, N, k, g)
        noise = torch.stack([torch.rand(N, k, g, generator=gen) for gen in gens]).to(dev)
        if temperature > 0:
            gumbel = -torch.log(-torch.log(noise.clamp(1e-20, 1 - 1e-7)))
            guess = (logp / temperature + gumbel).argmax(-1)  # (B, N, k)
        else:
            guess = logp.argmax(-1)
        confidence = logp.gather(-1, guess[..., None])[..., 0].sum(-1)  # (B, N)
        fade = temperature * (1 - (s + 1) / steps)
        if fade > 0:
            pick = torch.stack([torch.rand(N, generator=gen) for gen in gens]).to(dev)
            confidence = confidence + fade * -torch.log(-torch.log(pick.clamp(1e-20, 1 - 1e-7)))
        confidence = confidence.masked_fill(known, math.inf)
        share = float(mask_schedule(torch.tensor((s + 1) / steps)))
        order = confidence.argsort(1, descending=True)
        keep = torch.zeros_like(known)
        for b in range(B):  # the known tokens (confidence inf) first, then the best guesses
            keep[b, order[b, : N - int(math.floor(share * unknown[b]))]] = True
        keep |= fixed
        flat = high.flatten(1, 3)
        new = keep & ~known
        flat[new] = guess[new]
        high = flat.view(B, *grid, k)
        known = keep
    return model.join_codes(high)
