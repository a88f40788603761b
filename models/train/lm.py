"""Stage 3: the prefix LM over the tokenizers' codes, every task at once: one task per batch, so
every sequence in a batch has the same length (the paper's grouping by length), with the text
dropped from a share of the rows for classifier-free guidance. Its clips come from the token
cache (`token_cache.py`)."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from models.conditioning import latent_box_mask
from models.lm import PrefixLM, prefix_mask
from models.pipeline import TaskShapes
from models.spec import Task
from models.train import distributed
from models.train.errors import TrainingError
from models.train.loop import DEFAULTS, Run, train_loop
from models.train.token_cache import cached_lm_data
from models.vocab import Kind, assemble

log = logging.getLogger(__name__)

TEXT_DROP = 0.1  # share of rows trained without their text (classifier-free guidance)
# Cross-modal tasks drop it more often: with the caption there, a soundtrack could be read off
# the words ("ball" -> sine) instead of the pixels; without it, only the other modality is left.
TEXT_DROP_CROSS_MODAL = 0.5
# How often each task's batch is drawn. The tasks the eval targets most get more.
TASK_WEIGHTS: dict[Task, float] = {
    Task.text_to_video: 3.0,
    Task.text_to_image: 1.0,
    Task.image_to_video: 1.0,
    Task.continuation: 1.0,
    Task.inpaint: 0.5,
    Task.outpaint: 0.5,
    Task.stylize: 1.5,
    Task.video_to_audio: 2.0,
    Task.audio_to_video: 1.0,
}


def task_weights(spec: str) -> dict[Task, float]:
    """TASK_WEIGHTS with --task-weights' "task=w,task=w" changes (0 leaves a task out)."""
    weights = dict(TASK_WEIGHTS)
    tasks = ", ".join(t.value for t in TASK_WEIGHTS)
    for item in filter(None, (part.strip() for part in (spec or "").split(","))):
        name, _, value = item.partition("=")
        try:
            task, w = Task(name.strip()), float(value)
        except ValueError:
            raise TrainingError(
                f"--task-weights: {item!r} is not task=weight; tasks: {tasks}; "
                "weights are numbers >= 0"
            ) from None
        if task not in TASK_WEIGHTS or not w >= 0:
            raise TrainingError(
                f"--task-weights: {item!r}: the LM trains {tasks}, each with a weight >= 0"
            )
        weights[task] = w
    if not any(weights.values()):
        raise TrainingError(
            "--task-weights: every task has weight 0; give at least one a weight > 0"
        )
    return weights


def changed_tokens(video: torch.Tensor) -> torch.Tensor:
    """(B, t, h, w) codes -> bool, True where a code differs from the previous latent frame's
    at the same place: the tokens a moving object touches. Frame 0 has none."""
    changed = torch.zeros_like(video, dtype=torch.bool)
    changed[:, 1:] = video[:, 1:] != video[:, :-1]
    return changed


def new_tokens(video: torch.Tensor) -> torch.Tensor:
    """(B, t, h, w) codes -> bool: the tokens that are not a copy of the previous latent
    frame's, i.e. every token of frame 0 (nothing comes before it) and the changed ones after.
    Weighting these up leaves frame 0 (colour, shape, size, place) its share of the loss and
    takes it from the copied background only."""
    new = changed_tokens(video)
    new[:, 0] = True
    return new


def lm_batch(
    task: Task,
    d: dict,
    rows: np.ndarray,
    layout,
    vocab,
    shapes: TaskShapes,
    rng,
    changed_weight: float = 1.0,
    text_drop: float | None = None,
) -> dict:
    """One batch of one task from token-cache rows, mirroring the pipeline's conditioning
    (Pipeline._run_group): {"batch": the assembled batch, "text_len": its longest prompt,
    "visual_weight": (B, n) weights of the visual output tokens, or None}.

    changed_weight: loss weight of the output's new visual tokens, those that do not copy the
    previous latent frame (see `new_tokens`); 1 weighs every token alike. text_drop: the share
    of rows without their text (None: the task's training share; 0 for probes).
    """
    video = d["video"][rows].long()  # (B, t, h, w)
    B = len(rows)
    n = shapes.per_frame
    flat = video.flatten(1)
    weight = 1.0 + (changed_weight - 1.0) * new_tokens(video).flatten(1).float()
    out_from = 0  # where visual_out starts in `flat`
    content: dict[str, torch.Tensor] = {}
    if task in (Task.text_to_video,):
        content["visual_out"] = flat
    elif task is Task.text_to_image:
        content["visual_out"] = flat[:, :n]
    elif task is Task.image_to_video:
        content["visual_in"], content["visual_out"] = flat[:, :n], flat[:, n:]
        out_from = n
    elif task is Task.continuation:
        ctx = shapes.t_context * n
        content["visual_in"], content["visual_out"] = flat[:, :ctx], flat[:, ctx:]
        out_from = ctx
    elif task in (Task.inpaint, Task.outpaint):
        h, w = shapes.latent_hw
        masks = []
        for _ in range(B):
            bh, bw = int(rng.integers(1, h)), int(rng.integers(1, w))
            y0, x0 = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
            box = latent_box_mask((x0, y0, x0 + bw, y0 + bh), (h, w), (h, w))
            masks.append(box if task is Task.inpaint else ~box)
        masked = torch.from_numpy(np.stack(masks))[:, None].expand_as(video)
        content["visual_in"] = torch.where(masked, -1, video).flatten(1)
        content["visual_out"] = flat
    elif task is Task.stylize:
        content["visual_in"] = d["control"][rows].long().flatten(1)
        content["visual_out"] = flat
    elif task is Task.video_to_audio:
        content["visual_in"], content["audio_out"] = flat, d["audio"][rows].long()
    elif task is Task.audio_to_video:
        content["audio_in"], content["visual_out"] = d["audio"][rows].long(), flat
    else:
        raise ValueError(f"the LM stage does not train {task.value}")
    cap = d["caption"][rows]
    text = d["text"][cap].float()  # (B, longest, D)
    text_len = d["text_len"][cap].clone()
    if text_drop is not None:
        p_drop = text_drop
    elif task in (Task.video_to_audio, Task.audio_to_video):
        p_drop = TEXT_DROP_CROSS_MODAL
    else:
        p_drop = TEXT_DROP
    drop = torch.from_numpy(rng.random(B) < p_drop)
    text_len[drop] = 0
    L = shapes.config.text_tokens
    mask = torch.arange(L)[None] < text_len[:, None]  # (B, L)
    full = torch.zeros(B, L, text.shape[-1])
    full[:, : text.shape[1]] = text
    full = full * mask[..., None]
    out = content.get("visual_out")
    visual_weight = None
    if out is not None and changed_weight != 1.0:
        visual_weight = weight[:, out_from : out_from + out.shape[1]]
    return {
        "batch": assemble(layout, vocab, text=full, text_mask=mask, batch_size=B, **content),
        "text_len": int(text_len.max()),
        "visual_weight": visual_weight,
    }


def batch_to_device(batch, device: str):
    """An assembled batch with its tensors on `device`."""
    if device == "cpu":
        return batch

    def move(t):
        return None if t is None else t.to(device)

    return replace(
        batch,
        ids=move(batch.ids),
        key_valid=move(batch.key_valid),
        text=move(batch.text),
        forced=move(batch.forced),
    )


def corrupt_outputs(batch, vocab, rates: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B, S) ids: `batch.ids` with each output content token replaced, with its row's
    probability `rates` (B,), by a random code of its kind (--input-noise).

    Only what the LM reads back of its own output changes, never the prefix (the task's input)
    nor the targets: an output whose earlier tokens may be wrong cannot be continued by copying
    them alone, so the LM must also read the task's input. Where a task's input matters at a
    few tokens only (which way the object starts to move, which timbre the first audio frame
    has) and the rest follows from the output so far, the LM otherwise learns to ignore it.
    """
    layout = batch.layout
    kinds = torch.tensor(layout.kinds)
    structure = torch.tensor(layout.structure)
    content = (torch.arange(layout.length) >= layout.prefix_len) & (structure < 0)
    ids = batch.ids.clone()
    B = ids.shape[0]
    pick = (torch.rand(B, layout.length, generator=generator) < rates[:, None]) & content[None]
    for kind in kinds[content].unique().tolist():
        lo, hi = vocab.code_range(kind)
        where = pick & (kinds == kind)[None]
        ids[where] = torch.randint(lo, hi, (int(where.sum()),), generator=generator)
    return ids


def token_losses(
    lm: PrefixLM, batch, vocab, text_len: int, inputs: torch.Tensor | None = None
) -> dict[int, torch.Tensor]:
    """Next-token cross-entropy at each of the output's content positions: {kind: (B, n)}, in
    sequence order (for Kind.visual: the visual_out tokens, latent frame by frame).
    `inputs` (B, S): the ids the LM reads (default batch.ids, see `corrupt_outputs`); the
    targets are always batch.ids.

    The text slot's padding beyond the batch's longest prompt is cut out of the sequence (its
    keys are masked and its outputs unused, so the rest computes exactly as with it): positions
    keep their original indices, so rotary positions match inference.
    """
    layout = batch.layout
    S, P = layout.length, layout.prefix_len
    keep = torch.ones(S, dtype=torch.bool)
    ts = layout.text_slice
    if ts is not None:
        keep[ts.start + max(1, text_len) : ts.stop] = False
    pos = torch.nonzero(keep).squeeze(1)  # (S',) original positions
    device = batch.ids.device
    keep, pos = keep.to(device), pos.to(device)
    fed = batch.ids if inputs is None else inputs.to(device)
    x = lm.tok_embeddings(fed[:, keep])  # (B, S', C)
    if ts is not None:
        n = max(1, text_len)
        x = x.clone()
        x[:, ts.start : ts.start + n] = lm.text_proj(batch.text[:, :n])
    P2 = P - int((~keep[:P]).sum())
    caption = None if ts is None else lm.caption_vector(batch.text, batch.key_valid[:, ts])
    grid = lm.layout_grid(layout, device)
    mask = prefix_mask(batch.key_valid[:, keep], P2)
    h = lm(x, pos, mask, caption=caption, grid=grid)  # (B, S', C)
    # hidden at original position i predicts the token at i + 1; outputs start at P
    kinds = torch.tensor(layout.kinds)
    structure = torch.tensor(layout.structure)
    out = {}
    for kind in sorted(set(layout.kinds[P:])):
        if kind in (Kind.special, Kind.text):
            continue
        at = (kinds == kind) & (structure < 0) & (torch.arange(S) >= P)
        targets_at = torch.nonzero(at).squeeze(1).to(device)
        lo, hi = vocab.code_range(kind)
        hidden = h[:, targets_at - 1 - (S - len(pos))]  # every dropped position lies before P
        logits = lm.logits(hidden, lo, hi).float()  # (B, n, hi - lo)
        target = batch.ids[:, targets_at] - lo
        out[kind] = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")
    return out


def lm_loss(
    lm: PrefixLM,
    batch,
    vocab,
    text_len: int,
    visual_weight: torch.Tensor | None = None,
    inputs: torch.Tensor | None = None,
) -> torch.Tensor:
    """The mean of `token_losses` over every output token; visual_weight (B, n) weighs each
    visual output token (the mean is then weighted)."""
    total, count = 0.0, 0.0
    for kind, ce in token_losses(lm, batch, vocab, text_len, inputs).items():
        if kind == Kind.visual and visual_weight is not None:
            w = visual_weight.to(ce.device)
            total, count = total + (ce * w).sum(), count + w.sum()
        else:
            total, count = total + ce.sum(), count + ce.numel()
    return total / count


def shard_batch(
    b: dict, inputs: torch.Tensor | None, own: range
) -> tuple[dict, torch.Tensor | None]:
    """Rows `own` of a global batch (`lm_batch`'s) and of its fed ids. Its text_len stays the
    global batch's, so each row computes as it does in one process."""
    rows = slice(own.start, own.stop)
    batch = b["batch"]
    weight = b["visual_weight"]
    part = replace(
        batch,
        ids=batch.ids[rows],
        key_valid=batch.key_valid[rows],
        text=None if batch.text is None else batch.text[rows],
        forced=batch.forced[rows],
    )
    return (
        {**b, "batch": part, "visual_weight": None if weight is None else weight[rows]},
        None if inputs is None else inputs[rows],
    )


def copy_tokenizers(source: str, out: str) -> None:
    """--tokenizers-from: a new folder (no config.json) gets `source`'s config.json and both
    tokenizers, so that `train lm` trains only the LM on them (rank 0 copies)."""
    import shutil
    from pathlib import Path

    from models.card import resolve_checkpoint

    folder = resolve_checkpoint(source) or Path(source)
    names = ["config.json"] + [f"{c}.safetensors" for c in ("video_tokenizer", "audio_tokenizer")]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise TrainingError(f"--tokenizers-from: {folder} has no {', '.join(missing)}")
    target = Path(out)
    if (target / "config.json").is_file():
        log.info("--tokenizers-from: %s has its config.json already; leaving it as it is", target)
        return
    if distributed.world().main:
        target.mkdir(parents=True, exist_ok=True)
        for n in names[1:] + names[:1]:  # config.json last: a folder with it is complete
            shutil.copyfile(folder / n, target / n)
        log.info("--tokenizers-from: copied %s from %s into %s", ", ".join(names), folder, target)
    distributed.barrier()


def set_text_pool_heads(run: Run, heads: int) -> None:
    """--text-pool-heads: write the LM's text_pool_heads into the folder's config.json before
    its first step (the new queries and map start at zero, so an LM --init-from one without
    them starts from the same predictions)."""
    import json

    from models.pipeline import ModelConfig

    if run.config.lm.text_pool_heads == heads:
        return
    if run.state_path.is_file():
        raise TrainingError(
            f"--text-pool-heads {heads}: the LM in {run.out} has trained with "
            f"text_pool_heads {run.config.lm.text_pool_heads}; start a new --out"
        )
    if heads and not run.config.lm.text_global:
        raise TrainingError("--text-pool-heads adds to the caption path: it needs text_global")
    path = run.out / "config.json"
    if run.world.main:
        d = json.loads(path.read_text())
        d["lm"]["text_pool_heads"] = heads
        path.write_text(json.dumps(d, indent=2) + "\n")
        log.info("text_pool_heads %d written into %s", heads, path)
    distributed.barrier()
    run.config = ModelConfig.from_dict(json.loads(path.read_text()))


def train_lm(args) -> dict:
    run = Run(args.out, "lm", args.config)
    if args.text_pool_heads is not None:
        set_text_pool_heads(run, args.text_pool_heads)
    config = run.config
    captions = args.captions
    # Under torchrun rank 0 tokenizes (or grows) the cache; the others then load it.
    if run.world.main:
        d = cached_lm_data(run, args.data, args.clips, args.seed, args.device, captions)
    distributed.barrier()
    if not run.world.main:
        d = cached_lm_data(run, args.data, args.clips, args.seed, args.device, captions)
    torch.manual_seed(args.seed)
    lm = PrefixLM(config.lm)
    lm.init_weights()
    shapes = TaskShapes(config)
    layouts = shapes.layouts()
    vocab = config.vocab
    chosen = task_weights(args.task_weights)
    tasks = [t for t in chosen if chosen[t] > 0]
    weights = np.array([chosen[t] for t in tasks])
    weights = weights / weights.sum()
    batch = args.batch or DEFAULTS["lm"].batch
    N = len(d["video"])

    own = distributed.shard(batch)  # this process's rows of each global batch

    def step_fn(rng, step):
        # the whole global batch is drawn (indices into the cache: cheap), each process keeps
        # its rows, so N processes train on the rows one would
        task = tasks[int(rng.choice(len(tasks), p=weights))]
        rows = rng.integers(0, N, batch)
        b = lm_batch(task, d, rows, layouts[task], vocab, shapes, rng, args.changed_weight)
        inputs = None
        if args.input_noise:
            g = torch.Generator().manual_seed(int(rng.integers(2**62)))
            rates = torch.from_numpy(rng.uniform(0, args.input_noise, batch)).float()
            inputs = corrupt_outputs(b["batch"], vocab, rates, g)
        if len(own) < batch:
            b, inputs = shard_batch(b, inputs, own)
        on_device = batch_to_device(b["batch"], args.device)
        loss = lm_loss(lm, on_device, vocab, b["text_len"], b["visual_weight"], inputs)
        return loss, {f"loss_{task.value}": loss.detach()}

    return train_loop(run, lm, args, step_fn)
