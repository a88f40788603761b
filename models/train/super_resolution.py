"""Stage 4: the super-resolution model (models/super_resolution.py) over the folder's video
tokenizer's codes. Each training clip is drawn twice, at the card's size and at `scale` times
it (the same scene: Shapes-AV renders at any resolution; a JSONL video is decoded at both
sizes), tokenized by the folder's video tokenizer (the larger size by the stage's own,
`sr_video_tokenizer.safetensors`, when `--sr-tokenizer-from` gave one) and cached with the
caption's text states in `DIR/train/sr_data.pt`. The cache is written every chunk of clips,
so a stopped tokenizing goes on where it stopped, and is kept while the tokenizers' codes and
the clips' source stay the same. Then masked-token prediction, the LM stage's loop (checkpoints, resume,
time limit, torchrun).

`--low-degrade SHARE` (conditioning augmentation, as cascaded image models train their
upsamplers on blurred low-resolution inputs): a SHARE of the training rows take, in place of
their clip's low-resolution codes, the codes of the same clip shrunk DEGRADE_FACTOR times and
grown back: the object keeps its place, size, colour and motion but its outline is a blob. The
LM's own samples at the card's size are such blobs; a stage trained only on sharp codes copies
their outline, one trained on blurred ones as well learns to draw the shape the text names.
These codes are cached beside the others (`low_soft`), tokenized the first time a run asks.

`--object-weight W`: the larger size's tokens that hold the object, and their neighbours along
rows and columns, count 1 + W times in the loss (`object_tokens`, cached as `high_object`):
on a flat ground they are a fifth of the grid or less, and they are where a shape is drawn."""

from __future__ import annotations

import json
import logging
import sys
import time

import numpy as np
import torch

from models.super_resolution import SR_PRESETS, SRConfig, SuperResolution, masked_loss
from models.train import distributed
from models.train.data import open_data
from models.train.errors import TrainingError
from models.train.loop import DEFAULTS, Run, train_loop
from models.train.token_cache import encode_captions, load_tokenizers, token_digest
from models.video_tokenizer import VideoTokenizer

log = logging.getLogger(__name__)

SR_CACHE = "sr_data.pt"  # in the run folder's train/
CHUNK = 64  # clips tokenized between two writes of the cache
DEGRADE_FACTOR = 4  # --low-degrade: 64x64 frames through 16x16, about one pixel per 8x8 token's 2x2


def sr_config_for(config, preset: str, scale: int = 2) -> SRConfig:
    """The SR preset sized for a model: its tokenizer's code bits, its clip's latent grid at
    `scale` times the width and height."""
    t, h, w = config.visual_grid()
    return SRConfig.from_name(
        preset,
        codebook_bits=config.video.codebook_bits,
        grid=(t, h * scale, w * scale),
        scale=scale,
    )


def set_sr_config(run: Run, preset: str | None) -> SRConfig:
    """The folder's SR config: written from `preset` (default: the model's own name, e.g. demo)
    the first time; kept after, and a different --sr-preset refused once the stage has trained."""
    from models.pipeline import ModelConfig

    config = run.config
    if config.sr is not None and (preset is None or run.state_path.is_file()):
        if preset is not None and sr_config_for(config, preset).to_dict() != config.sr.to_dict():
            raise TrainingError(
                f"--sr-preset {preset}: the SR stage in {run.out} has trained with another "
                "config (config.json's super_resolution); start a new --out"
            )
        return config.sr
    name = preset or config.name
    if name not in SR_PRESETS:
        raise TrainingError(
            f"no SR preset named {name!r}: pass --sr-preset ({', '.join(SR_PRESETS)})"
        )
    sr = sr_config_for(config, name)
    path = run.out / "config.json"
    if run.world.main:
        d = json.loads(path.read_text())
        d["super_resolution"] = sr.to_dict()
        d["card"]["sr_scale"] = sr.scale  # the card serves both sizes (the larger by default)
        path.write_text(json.dumps(d, indent=2) + "\n")
        log.info("super_resolution (%s preset, grid %s) written into %s", name, sr.grid, path)
    distributed.barrier()
    run.config = ModelConfig.from_dict(json.loads(path.read_text()))
    return sr


def set_sr_tokenizer(run: Run, source: str) -> None:
    """--sr-tokenizer-from: the video tokenizer of `source` (a folder or shipped name, e.g. a
    `train video-tokenizer --scales 2` run's --out) becomes the stage's own tokenizer at the
    larger size: its weights copied as sr_video_tokenizer.safetensors and its config written
    into config.json. The same tokenizer again changes nothing; another one is refused once
    the stage has trained on the codes of the first."""
    import shutil

    from models.card import resolve_checkpoint
    from models.pipeline import SR_TOKENIZER, ModelConfig

    folder = resolve_checkpoint(source)
    weights = None if folder is None else folder / "video_tokenizer.safetensors"
    if weights is None or not weights.is_file():
        raise TrainingError(
            f"--sr-tokenizer-from: {source} is not a checkpoint folder with config.json and "
            "video_tokenizer.safetensors"
        )
    theirs = ModelConfig.from_dict(json.loads((folder / "config.json").read_text())).video
    if theirs.codebook_bits != run.config.video.codebook_bits:
        raise TrainingError(
            f"--sr-tokenizer-from: {source}'s video tokenizer has {theirs.codebook_bits} code "
            f"bits and this model's {run.config.video.codebook_bits}: the stage needs one codebook"
        )
    target = run.out / f"{SR_TOKENIZER}.safetensors"
    if target.is_file() and token_digest(target) == token_digest(weights):
        return
    if run.state_path.is_file():
        raise TrainingError(
            f"--sr-tokenizer-from: the SR stage in {run.out} has trained on another tokenizer's "
            "codes; start a new --out"
        )
    path = run.out / "config.json"
    if run.world.main:
        shutil.copyfile(weights, target)
        d = json.loads(path.read_text())
        d[SR_TOKENIZER] = theirs.to_dict()
        path.write_text(json.dumps(d, indent=2) + "\n")
        log.info("the SR stage's tokenizer: %s (into %s)", weights, target)
    distributed.barrier()
    run.config = ModelConfig.from_dict(json.loads(path.read_text()))


def high_tokenizer(run: Run) -> tuple[VideoTokenizer | None, str]:
    """The stage's own tokenizer at the larger size (None: the folder's video tokenizer serves
    both) and the digest of its codes ("" without one)."""
    from models.pipeline import SR_TOKENIZER, load_component

    config = run.config.sr_video
    if config is None:
        return None, ""
    try:
        module = load_component(
            run.out, SR_TOKENIZER, lambda: VideoTokenizer(config), "give --sr-tokenizer-from again"
        )
    except FileNotFoundError as exc:
        raise TrainingError(str(exc)) from None
    return module, token_digest(run.out / f"{SR_TOKENIZER}.safetensors")


@torch.no_grad()
def tokenize_pairs(data_low, data_high, indices, video_tok, device: str, high_tok=None) -> tuple:
    """Examples `indices` at both sizes -> (low codes, high codes, captions); the high codes
    by `high_tok` when given."""
    lows, highs, captions = [], [], []
    for data, out, tok in ((data_low, lows, video_tok), (data_high, highs, high_tok or video_tok)):
        frames = np.stack([data[int(i)].frames for i in indices])
        x = VideoTokenizer.frames_to_tensor(frames).to(device)
        out.append(tok.encode(x).cpu().to(torch.int16))
    captions = [data_low[int(i)].caption for i in indices]
    return lows[0], highs[0], captions


def clip_order(n: int, want: int, seed: int) -> np.ndarray:
    """The indices of the `want` clips (of `n`) the cache holds, in its order."""
    return np.random.default_rng([seed, 11]).permutation(n)[:want]


def degrade(frames: np.ndarray, factor: int = DEGRADE_FACTOR) -> np.ndarray:
    """(T, H, W, 3) uint8 -> the same frames shrunk `factor` times (area) and grown back
    (bilinear): place, size, colour and motion kept, the outline blurred to a blob."""
    from models.conditioning import resize_frames

    h, w = frames.shape[1:3]
    small = resize_frames(frames, max(1, h // factor), max(1, w // factor))
    return resize_frames(small, h, w)


def grow_cache(run: Run, d: dict, key: str, what: str, order: np.ndarray, make) -> dict:
    """The cache `d` with `key`: one row per clip of `low`, whose data indices are `order`
    (clip_order), made where missing by `make(indices)` (a chunk of them -> one row each) and
    written chunk by chunk, so that a stopped run goes on where it stopped."""
    have = len(d[key]) if key in d else 0
    want = len(d["low"])
    if have >= want:
        return d
    log.info("%s: clips %d to %d", what, have, want)
    t0 = time.perf_counter()
    rows = list(torch.unbind(d[key])) if have else []
    for i in range(have, want, CHUNK):
        rows += list(make(order[i : i + CHUNK]))
        d[key] = torch.stack(rows)
        torch.save(d, run.out / "train" / SR_CACHE)
        if len(rows) < want:
            print(f"sr cache ({what}): {len(rows)}/{want} clips", file=sys.stderr, flush=True)
    log.info("%s in %.0f s", what, time.perf_counter() - t0)
    return d


@torch.no_grad()
def add_degraded_codes(run: Run, d: dict, spec: str, seed: int, device: str) -> dict:
    """The cache `d` with `low_soft`: each clip's codes at the card's size through `degrade`,
    tokenized where missing."""
    data = open_data(spec, run.config.card, seed=seed)
    video_tok = load_tokenizers(run)[0].to(device).eval()

    def make(indices: np.ndarray) -> torch.Tensor:
        frames = np.stack([degrade(data[int(j)].frames) for j in indices])
        x = VideoTokenizer.frames_to_tensor(frames).to(device)
        return video_tok.encode(x).cpu().to(torch.int16)

    order = clip_order(len(data), len(d["low"]), seed)
    return grow_cache(run, d, "low_soft", "tokenizing blurred at the card's size", order, make)


def object_tokens(frames: np.ndarray, tok: VideoTokenizer, grid: tuple[int, ...]) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 frames -> (B, *grid) bool: the tokens whose patch holds a pixel
    unlike its frame's background (the video tokenizer's `foreground`), and the tokens next to
    them along rows and columns (where the outline is decided either way)."""
    from models.train.video_tokenizer import foreground

    fg = foreground(VideoTokenizer.frames_to_tensor(frames))
    m = tok.token_mask(fg).view(len(frames), *grid).float()[:, None]
    return torch.nn.functional.max_pool3d(m, (1, 3, 3), stride=1, padding=(0, 1, 1))[:, 0] > 0


def add_object_tokens(run: Run, d: dict, spec: str, seed: int, scale: int) -> dict:
    """The cache `d` with `high_object`: each clip's `object_tokens` at the larger size, from
    its frames rendered again (nothing to tokenize)."""
    data = open_data(spec, run.config.card, seed=seed, scale=scale)
    tok = load_tokenizers(run)[0]  # its patch sizes, which the larger size's tokenizer shares
    grid = tuple(d["high"].shape[1:])

    def make(indices: np.ndarray) -> torch.Tensor:
        return object_tokens(np.stack([data[int(j)].frames for j in indices]), tok, grid)

    order = clip_order(len(data), len(d["low"]), seed)
    return grow_cache(run, d, "high_object", "finding the object's tokens", order, make)


def cached_sr_data(run: Run, spec: str, clips: int, seed: int, scale: int, device: str) -> dict:
    """The run's SR cache with `clips` clips of `spec` (at most a file's length): loaded, grown
    chunk by chunk (each chunk written), or started again when the tokenizer's codes or the
    clips' source have changed."""
    from models.text_encoder import load_text_encoder

    config = run.config
    path = run.out / "train" / SR_CACHE
    tokenizer = run.out / "video_tokenizer.safetensors"
    if not tokenizer.is_file():
        raise TrainingError(f"{tokenizer} is missing: train the video tokenizer first")
    high_tok, high_digest = high_tokenizer(run)
    digest = token_digest(tokenizer) + (f"+{high_digest}" if high_digest else "")
    source = f"{spec} (seed {seed}, scale {scale})"
    d = torch.load(path, weights_only=True) if path.is_file() else None
    if d is not None and (d["tokenizer"] != digest or d["source"] != source):
        log.info("%s was tokenized from other codes or clips: tokenizing again", path)
        d = None
    low_data = open_data(spec, config.card, seed=seed)
    high_data = open_data(spec, config.card, seed=seed, scale=scale)
    want = min(clips, len(low_data))
    have = 0 if d is None else len(d["low"])
    if have >= want and "text" in d:
        return d
    video_tok, _ = load_tokenizers(run)
    video_tok = video_tok.to(device).eval()
    if high_tok is not None:
        high_tok = high_tok.to(device)
    log.info("tokenizing clips %d to %d at both sizes for the SR stage", have, want)
    t0 = time.perf_counter()
    order = clip_order(len(low_data), want, seed)
    lows = list(torch.unbind(d["low"])) if d else []
    highs = list(torch.unbind(d["high"])) if d else []
    captions = list(d["captions"]) if d else []
    for i in range(have, want, CHUNK):
        low, high, caps = tokenize_pairs(
            low_data, high_data, order[i : i + CHUNK], video_tok, device, high_tok
        )
        lows, highs, captions = lows + list(low), highs + list(high), captions + caps
        d = {
            "low": torch.stack(lows),
            "high": torch.stack(highs),
            "captions": captions,
            "tokenizer": digest,
            "source": source,
        }
        if len(lows) < want:  # the codes so far: a stopped run goes on from here
            torch.save(d, path)
            print(f"sr tokenize: {len(lows)}/{want} clips", file=sys.stderr, flush=True)
    encoder = load_text_encoder(config.text_encoder, config.text_encoder_path, config.text_tokens)
    d.update(encode_captions(encoder, captions))  # each distinct caption's states, once
    torch.save(d, path)
    log.info("tokenized in %.0f s", time.perf_counter() - t0)
    return d


def train_sr(args) -> dict:
    run = Run(args.out, "sr", args.config)
    sr = set_sr_config(run, args.sr_preset)
    if args.sr_tokenizer_from:
        set_sr_tokenizer(run, args.sr_tokenizer_from)
    share = args.low_degrade

    def load() -> dict:
        d = cached_sr_data(run, args.data, args.clips, args.seed, sr.scale, args.device)
        if args.object_weight > 0:
            d = add_object_tokens(run, d, args.data, args.seed, sr.scale)
        return add_degraded_codes(run, d, args.data, args.seed, args.device) if share > 0 else d

    # Under torchrun rank 0 tokenizes (or grows) the cache; the others then load it.
    if run.world.main:
        d = load()
    distributed.barrier()
    if not run.world.main:
        d = load()
    torch.manual_seed(args.seed)
    model = SuperResolution(sr)
    model.init_weights()
    batch = args.batch or DEFAULTS["super_resolution"].batch
    N = len(d["low"])
    own = distributed.shard(batch)
    text_all, text_len = d["text"], d["text_len"]

    def step_fn(rng, step):
        rows = rng.integers(0, N, batch)[own]  # the global batch; this process's rows of it
        g = torch.Generator().manual_seed(int(rng.integers(2**62)))
        caption = d["caption"][rows]
        text = text_all[caption].float().to(args.device)
        lengths = text_len[caption]
        mask = torch.arange(text.shape[1])[None, :] < lengths[:, None]
        high = d["high"][rows].long().to(args.device)
        low = d["low"][rows]
        if share > 0:  # drawn for the global batch: every rank's rows agree
            soft = torch.from_numpy(rng.random(batch)[own] < share)
            low = torch.where(soft[:, None, None, None], d["low_soft"][rows], low)
        low = low.long().to(args.device)
        weight = None
        if args.object_weight > 0:
            weight = (1 + args.object_weight * d["high_object"][rows].float()).to(args.device)
        loss = masked_loss(model, high, low, text, mask.to(args.device), g, weight)
        return loss, {}

    return train_loop(run, model, args, step_fn)
