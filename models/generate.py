"""Sampling: prefill once, then one token at a time over the static KV cache.

Free functions over a `PrefixLM` (gpt-fast style). Every output position has a known kind
(visual, or audio of one level, or a fixed marker), so the logits are computed over that kind's
ids only and the markers are written, not sampled. Each row has its own seed (a torch
Generator), temperature, top-k and top-p, and a row's random draws do not depend on the other
rows of the batch. Classifier-free guidance runs the unconditional rows (text masked out) in
the same batch as the conditional ones.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import torch

from models.lm import PrefixLM, prefix_mask
from models.spec import GenerationCancelled
from models.vocab import Batch, Vocab


@dataclass
class SamplingParams:
    """Per-row sampling settings; `for_rows` builds them from plain values.

    The tensors live on the sampling device; the plain-Python flags beside them let the loop
    decide what to run without reading anything back from the device (no host sync per step).
    """

    temperature: torch.Tensor  # (B,) float; 0 = greedy
    top_k: torch.Tensor  # (B,) int; 0 = off
    top_p: torch.Tensor  # (B,) float; 1 = off
    guidance: torch.Tensor  # (B,) float; 1 = no guidance
    generators: list[torch.Generator]
    greedy: list[bool]
    max_top_k: int  # 0 when no row uses top-k
    any_top_p: bool
    any_guidance: bool

    @classmethod
    def for_rows(cls, seeds, temperature, top_k, top_p, guidance, device="cpu") -> SamplingParams:
        generators = []
        for seed in seeds:
            g = torch.Generator(device=device)
            g.manual_seed(int(seed))
            generators.append(g)
        temperature = [float(t) for t in temperature]
        top_k = [int(k or 0) for k in top_k]
        top_p = [float(p) if p else 1.0 for p in top_p]
        guidance = [float(g) for g in guidance]
        return cls(
            temperature=torch.tensor(temperature, device=device),
            top_k=torch.tensor(top_k, device=device),
            top_p=torch.tensor(top_p, device=device),
            guidance=torch.tensor(guidance, device=device),
            generators=generators,
            greedy=[t <= 0 for t in temperature],
            max_top_k=max(top_k, default=0),
            any_top_p=any(p < 1 for p in top_p),
            any_guidance=any(g != 1 for g in guidance),
        )

    def select(self, rows: list[int]) -> SamplingParams:
        """The settings of `rows` only (a batch that lost some rows). The batch-wide flags stay
        as they were, so what the kept rows compute does not change when others leave."""
        index = torch.tensor(rows, device=self.temperature.device)
        return SamplingParams(
            temperature=self.temperature[index],
            top_k=self.top_k[index],
            top_p=self.top_p[index],
            guidance=self.guidance[index],
            generators=[self.generators[r] for r in rows],
            greedy=[self.greedy[r] for r in rows],
            max_top_k=self.max_top_k,
            any_top_p=self.any_top_p,
            any_guidance=self.any_guidance,
        )

    @classmethod
    def stack(cls, rows: list[SamplingParams]) -> SamplingParams:
        """One batch's settings from each row's own (a continuous batch's rows come and go)."""
        return cls(
            temperature=torch.cat([r.temperature for r in rows]),
            top_k=torch.cat([r.top_k for r in rows]),
            top_p=torch.cat([r.top_p for r in rows]),
            guidance=torch.cat([r.guidance for r in rows]),
            generators=[g for r in rows for g in r.generators],
            greedy=[g for r in rows for g in r.greedy],
            max_top_k=max(r.max_top_k for r in rows),
            any_top_p=any(r.any_top_p for r in rows),
            any_guidance=any(r.any_guidance for r in rows),
        )


def filter_logits(
    logits: torch.Tensor,
    top_k: torch.Tensor | None,
    top_p: torch.Tensor | None,
    max_k: int | None = None,
) -> torch.Tensor:
    """Set logits outside each row's top-k and nucleus top-p to -inf. logits (B, V).

    top_k (B,) with 0 = off, top_p (B,) with 1 = off; None skips that filter for every row.
    max_k: the largest k of any row, known on the host (saves reading top_k back).
    """
    V = logits.shape[-1]
    if top_k is not None:
        kmax = min(V, max_k if max_k is not None else V)
        kth = logits.topk(kmax, dim=-1).values  # (B, kmax) descending
        idx = (top_k - 1).clamp(min=0, max=kmax - 1)[:, None]
        threshold = kth.gather(-1, idx)
        threshold = torch.where(
            top_k[:, None] > 0, threshold, torch.full_like(threshold, -torch.inf)
        )
        logits = logits.masked_fill(logits < threshold, -torch.inf)
    if top_p is not None:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass before it already reaches top_p (the first always stays)
        # (rows with top_p 1 keep everything: what a row keeps never depends on its batch)
        drop_sorted = ((probs.cumsum(-1) - probs) >= top_p[:, None]) & (top_p[:, None] < 1)
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, -torch.inf)
    return logits


def sample(logits: torch.Tensor, params: SamplingParams, rows: list[int]) -> torch.Tensor:
    """One id per row (B,): Gumbel-max over the filtered, tempered logits.

    Only `rows` draw noise (the others are forced at this position), so each row's stream of
    random numbers is the same whether it runs alone or in a batch.
    """
    B, V = logits.shape
    logits = filter_logits(
        logits,
        params.top_k if params.max_top_k else None,
        params.top_p if params.any_top_p else None,
        max_k=params.max_top_k,
    )
    temperature = params.temperature.clamp_min(1e-6)  # greedy rows get no noise below
    scaled = logits / temperature[:, None]
    noise = torch.zeros_like(scaled)
    for r in rows:
        if not params.greedy[r]:
            u = torch.rand(V, generator=params.generators[r], device=logits.device)
            noise[r] = -torch.log(-torch.log(u.clamp_min(1e-20)))
    return (scaled + noise).argmax(-1)


def prefill(
    model: PrefixLM,
    x: torch.Tensor,
    key_valid: torch.Tensor,
    prefix_len: int,
    caption: torch.Tensor | None = None,
    grid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run the prefix x (B, P, C) through the model, filling the cache; hidden of its last position.
    caption: `PrefixLM.caption_vector` of the rows, given again at every decoding step; grid:
    `PrefixLM.layout_grid` of the layout, likewise."""
    P = x.shape[1]
    mask = prefix_mask(key_valid, prefix_len, q_len=P)
    h = model(x, torch.arange(P, device=x.device), mask, caption=caption, grid=grid)
    return h[:, -1]


def decode_one_token(
    model: PrefixLM,
    token: torch.Tensor,
    pos: int,
    key_valid: torch.Tensor,
    caption: torch.Tensor | None = None,
    grid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Feed token (B,) at position `pos`; hidden state (B, C) that predicts position pos + 1.

    Eager: attention reads only the pos + 1 filled cache entries.
    """
    x = model.embed(token[:, None], None, None)
    mask = key_valid[:, None, None, : pos + 1]  # keys 0..pos: everything so far
    return model(
        x,
        torch.tensor([pos], device=token.device),
        mask,
        kv_len=pos + 1,
        caption=caption,
        grid=grid,
    )[:, -1]


def decode_one_token_static(
    model: PrefixLM,
    token: torch.Tensor,
    input_pos: torch.Tensor,
    key_valid: torch.Tensor,
    caption: torch.Tensor | None = None,
    grid: torch.Tensor | None = None,
) -> torch.Tensor:
    """The same step with fixed shapes (the whole cache, the position as a (1,) tensor), so
    one compiled graph (CUDA graphs under torch.compile's reduce-overhead) serves every step."""
    x = model.embed(token[:, None], None, None)
    keys = torch.arange(key_valid.shape[1], device=token.device)
    mask = (key_valid & (keys <= input_pos))[:, None, None, :]
    return model(x, input_pos, mask, caption=caption, grid=grid)[:, -1]


def decode_rows(
    model: PrefixLM,
    token: torch.Tensor,
    pos: torch.Tensor,
    kv_len: int,
    key_valid: torch.Tensor,
    caption: torch.Tensor | None = None,
    grid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Feed token (B,) of each row at its own position pos (B,) (a continuous batch: rows
    joined at different steps); hidden (B, C) predicting each row's next position.

    kv_len: max(pos) + 1, known on the host; attention reads that many cache entries, each
    row only its own keys up to its position.
    """
    x = model.embed(token[:, None], None, None)
    keys = torch.arange(kv_len, device=token.device)
    mask = (key_valid[:, :kv_len] & (keys[None] <= pos[:, None]))[:, None, None, :]
    return model(x, pos[:, None], mask, kv_len=kv_len, caption=caption, grid=grid)[:, -1]


def compile_decode_step(mode: str = "reduce-overhead") -> Callable:
    """decode_one_token_static under torch.compile. Pays on CUDA, where the step is launch-bound;
    on CPU the compile costs ~40 s and the generated code was not faster here."""
    return torch.compile(decode_one_token_static, mode=mode, fullgraph=True, dynamic=False)


def _compact_caches(model: PrefixLM, index: torch.Tensor) -> None:
    """Move the cache rows `index` to the front, in order (KVCache serves its first B rows)."""
    for block in model.layers:
        cache = block.attn.kv_cache
        n = len(index)
        cache.k[:n] = cache.k.index_select(0, index)
        cache.v[:n] = cache.v.index_select(0, index)


@torch.no_grad()
def generate_tokens(
    model: PrefixLM,
    vocab: Vocab,
    batch: Batch,
    params: SamplingParams,
    progress: Callable[[int, int], None] | None = None,
    static_step: Callable | None = None,
    drop_rows: Callable[[], Collection[int]] | None = None,
) -> torch.Tensor:
    """Sample the output of every row of `batch`: ids (B, S - prefix_len), markers included.

    `static_step`: a compiled `decode_one_token_static` to use instead of the eager step.
    Nothing in the loop reads a value back from the device: which rows sample at a position is
    decided from the forced ids on the host.

    `drop_rows()` (checked before every step) names rows no longer wanted (a cancelled request
    of a server's batch): they leave the batch, with their cache rows and random generators, so
    the rest run as a smaller batch; a dropped row's unsampled positions hold its kind's first
    code, so the output still decodes. GenerationCancelled when every row has been dropped.
    """
    layout = batch.layout
    P, S = layout.prefix_len, layout.length
    device = model.tok_embeddings.weight.device
    B = batch.ids.shape[0]
    ids = batch.ids.to(device)
    key_valid = batch.key_valid.to(device)
    text = None if batch.text is None else batch.text.to(device)
    use_cfg = layout.text_slice is not None and params.any_guidance
    if use_cfg:  # rows B..2B-1: the same sequences with the text masked out
        uncond_valid = key_valid.clone()
        uncond_valid[:, layout.text_slice] = False
        ids, key_valid = torch.cat([ids, ids]), torch.cat([key_valid, uncond_valid])
        text = torch.cat([text, torch.zeros_like(text)])

    forced_host = batch.forced.cpu()
    free = (forced_host < 0).tolist()  # free[r][i]: row r samples output position i
    forced = forced_host.to(device)
    kinds = layout.kinds[P:]
    structure = layout.structure[P:]
    content = [i for i, f in enumerate(structure) if f < 0]
    n_steps = content[-1] + 1 if content else 0
    out = forced.clone()
    live = list(range(B))  # rows of `out` still in the batch, in batch order
    rows: slice | torch.Tensor = slice(None)  # `live` as an index into `out`

    def leave(gone: set[int]) -> torch.Tensor:
        """Drop rows `gone` from `live`; the batch index of the kept (and their CFG twin) rows."""
        nonlocal live, params, rows
        keep = [k for k, r in enumerate(live) if r not in gone]
        if not keep:
            raise GenerationCancelled("every row of the batch was cancelled")
        n = len(live)
        live = [live[k] for k in keep]
        rows = torch.tensor(live, device=device)
        params = params.select(keep)
        return torch.tensor(keep + [k + n for k in keep] if use_cfg else keep, device=device)

    def dropped_now() -> set[int]:
        return set(drop_rows()).intersection(live) if drop_rows is not None else set()

    gone = dropped_now()
    if gone:  # before the prefill: these rows never run
        index = leave(gone)
        ids, key_valid = ids[index], key_valid[index]
        text = None if text is None else text[index]
    R = ids.shape[0]
    model.setup_caches(R, S)
    valid = torch.zeros(R, model.max_seq_len, dtype=torch.bool, device=device)
    valid[:, :S] = key_valid

    caption = None if text is None else model.caption_vector(text, key_valid[:, layout.text_slice])
    grid = model.layout_grid(layout, device)
    h = prefill(model, model.embed(ids[:, :P], text, layout.text_slice), valid, P, caption, grid)
    for i in range(n_steps):
        gone = dropped_now()
        if gone:
            try:
                index = leave(gone)
            except GenerationCancelled as exc:
                raise GenerationCancelled(f"{exc} after {i} of {n_steps} tokens") from None
            h, valid = h[index], valid[index]
            caption = None if caption is None else caption[index]
            _compact_caches(model, index)
        n = len(live)
        free_rows = [k for k, r in enumerate(live) if free[r][i]]
        if free_rows:
            lo, hi = vocab.code_range(kinds[i])
            logits = model.logits(h, lo, hi)  # (R, hi - lo)
            if use_cfg:
                cond, uncond = logits[:n], logits[n:]
                guidance = params.guidance[:, None]
                logits = torch.where(guidance == 1, cond, uncond + guidance * (cond - uncond))
            token = sample(logits, params, free_rows) + lo
            out[rows, i] = torch.where(forced[rows, i] >= 0, forced[rows, i], token)
        if progress is not None:
            progress(i + 1, n_steps)
        if i + 1 < n_steps:
            step = out[rows, i]
            step = torch.cat([step, step]) if use_cfg else step
            if static_step is None:
                h = decode_one_token(model, step, P + i, valid, caption, grid)
            else:
                h = static_step(
                    model, step, torch.tensor([P + i], device=device), valid, caption, grid
                ).clone()
    if len(live) < B:  # dropped rows: their unsampled positions get a valid code
        first = [
            vocab.code_range(kinds[i])[0] if structure[i] < 0 else 0 for i in range(len(kinds))
        ]
        out = torch.where(out >= 0, out, torch.tensor(first, device=device))
    return out
