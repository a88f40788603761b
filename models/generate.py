"""Sampling: prefill once, then one token at a time over the static KV cache.

Free functions over a `PrefixLM` (gpt-fast style). Every output position has a known kind
(visual, or audio of one level, or a fixed marker), so the logits are computed over that kind's
ids only and the markers are written, not sampled. Each row has its own seed (a torch
Generator), temperature, top-k and top-p, and a row's random draws do not depend on the other
rows of the batch. Classifier-free guidance runs the unconditional rows (text masked out) in
the same batch as the conditional ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from models.lm import PrefixLM, prefix_mask
from models.vocab import Batch, Vocab


class GenerationCancelled(Exception):
    """The cancel check returned True: sampling stopped between two steps."""


@dataclass
class SamplingParams:
    """Per-row sampling settings; `for_rows` builds them from plain values."""

    temperature: torch.Tensor  # (B,) float; 0 = greedy
    top_k: torch.Tensor  # (B,) int; 0 = off
    top_p: torch.Tensor  # (B,) float; 1 = off
    guidance: torch.Tensor  # (B,) float; 1 = no guidance
    generators: list[torch.Generator]

    @classmethod
    def for_rows(cls, seeds, temperature, top_k, top_p, guidance, device="cpu") -> SamplingParams:
        generators = []
        for seed in seeds:
            g = torch.Generator(device=device)
            g.manual_seed(int(seed))
            generators.append(g)
        return cls(
            temperature=torch.tensor([float(t) for t in temperature]),
            top_k=torch.tensor([int(k or 0) for k in top_k]),
            top_p=torch.tensor([float(p) if p else 1.0 for p in top_p]),
            guidance=torch.tensor([float(g) for g in guidance]),
            generators=generators,
        )


def filter_logits(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Set logits outside each row's top-k and nucleus top-p to -inf. logits (B, V)."""
    V = logits.shape[-1]
    top_k = top_k.to(logits.device).clamp(max=V)
    if bool((top_k > 0).any()):
        kmax = int(top_k.max())
        kth = logits.topk(kmax, dim=-1).values  # (B, kmax) descending
        idx = (top_k - 1).clamp(min=0)[:, None]
        threshold = kth.gather(-1, idx)
        threshold = torch.where(top_k[:, None] > 0, threshold, torch.full_like(threshold, -torch.inf))
        logits = logits.masked_fill(logits < threshold, -torch.inf)
    top_p = top_p.to(logits.device)
    if bool((top_p < 1).any()):
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass before it already reaches top_p (the first always stays)
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p[:, None]
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, -torch.inf)
    return logits


def sample(logits: torch.Tensor, params: SamplingParams, rows: list[int]) -> torch.Tensor:
    """One id per row (B,): Gumbel-max over the filtered, tempered logits.

    Only `rows` draw noise (the others are forced at this position), so each row's stream of
    random numbers is the same whether it runs alone or in a batch.
    """
    B, V = logits.shape
    temperature = params.temperature.to(logits.device)
    greedy = temperature <= 0
    logits = filter_logits(logits, params.top_k, params.top_p)
    scaled = logits / torch.where(greedy, 1.0, temperature)[:, None]
    noise = torch.zeros_like(scaled)
    for r in rows:
        if not bool(greedy[r]):
            u = torch.rand(V, generator=params.generators[r], device=logits.device)
            noise[r] = -torch.log(-torch.log(u.clamp_min(1e-20)))
    return (scaled + noise).argmax(-1)


def prefill(model: PrefixLM, x: torch.Tensor, key_valid: torch.Tensor, prefix_len: int) -> torch.Tensor:
    """Run the prefix x (B, P, C) through the model, filling the cache; hidden of its last position."""
    P = x.shape[1]
    mask = prefix_mask(key_valid, prefix_len, q_len=P)
    h = model(x, torch.arange(P, device=x.device), mask)
    return h[:, -1]


def decode_one_token(model: PrefixLM, token: torch.Tensor, pos: int, key_valid: torch.Tensor) -> torch.Tensor:
    """Feed token (B,) at position `pos`; hidden state (B, C) that predicts position pos + 1."""
    x = model.embed(token[:, None], None, None)
    mask = key_valid[:, None, None, : pos + 1]  # keys 0..pos: everything so far
    return model(x, torch.tensor([pos], device=token.device), mask, kv_len=pos + 1)[:, -1]


@torch.no_grad()
def generate_tokens(
    model: PrefixLM,
    vocab: Vocab,
    batch: Batch,
    params: SamplingParams,
    progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """Sample the output of every row of `batch`: ids (B, S - prefix_len), markers included."""
    layout = batch.layout
    P, S = layout.prefix_len, layout.length
    device = model.output.weight.device
    B = batch.ids.shape[0]
    ids = batch.ids.to(device)
    key_valid = batch.key_valid.to(device)
    text = None if batch.text is None else batch.text.to(device)
    guidance = params.guidance.to(device)
    use_cfg = layout.text_slice is not None and bool((guidance != 1).any())
    if use_cfg:  # rows B..2B-1: the same sequences with the text masked out
        uncond_valid = key_valid.clone()
        uncond_valid[:, layout.text_slice] = False
        ids, key_valid = torch.cat([ids, ids]), torch.cat([key_valid, uncond_valid])
        text = torch.cat([text, torch.zeros_like(text)])
    R = ids.shape[0]
    model.setup_caches(R, S)
    cache_len = model.max_seq_len
    valid = torch.zeros(R, cache_len, dtype=torch.bool, device=device)
    valid[:, :S] = key_valid

    forced = batch.forced.to(device)
    kinds = layout.kinds[P:]
    content = [i for i, f in enumerate(layout.structure[P:]) if f < 0]
    n_steps = content[-1] + 1 if content else 0
    out = forced.clone()

    h = prefill(model, model.embed(ids[:, :P], text, layout.text_slice), valid, P)
    for i in range(n_steps):
        if should_cancel is not None and should_cancel():
            raise GenerationCancelled(f"cancelled after {i} of {n_steps} tokens")
        free_rows = [r for r in range(B) if int(forced[r, i]) < 0]
        if free_rows:
            lo, hi = vocab.code_range(kinds[i])
            logits = model.logits(h, lo, hi)  # (R, hi - lo)
            if use_cfg:
                cond, uncond = logits[:B], logits[B:]
                g = guidance[:, None]
                logits = torch.where(g == 1, cond, uncond + g * (cond - uncond))
            token = sample(logits, params, free_rows) + lo
            out[:, i] = torch.where(forced[:, i] >= 0, forced[:, i], token)
        if progress is not None:
            progress(i + 1, n_steps)
        if i + 1 < n_steps:
            step = torch.cat([out[:, i], out[:, i]]) if use_cfg else out[:, i]
            h = decode_one_token(model, step, P + i, valid)
    return out
