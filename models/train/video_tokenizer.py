"""Stage 1: the video tokenizer (MAGVIT-v2 style, LFQ codes), trained on clip crops and single
frames with L1 + MSE pixel losses, optionally weighted to the foreground, a colour-difference
term, and a frame discriminator (`discriminator.py`); `--decoder-only` trains a new decoder on
a trained encoder's frozen codes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from models.train import distributed
from models.train.data import clip_window, open_data
from models.train.discriminator import Adversary
from models.train.errors import TrainingError
from models.train.loop import DEFAULTS, Run, train_loop
from models.video_tokenizer import VideoTokenizer


def video_batch(data, card, frames: int, batch: int, rng) -> torch.Tensor:
    """This process's share of a global batch of `batch` random windows of `frames` frames from
    random examples: (B, 3, T, H, W), B = batch / torchrun's processes (all of it alone).

    Example j of the global batch draws from a stream of its own, seeded from `rng`, so it is
    the same example whichever process takes it; each process decodes only its own."""
    seeds = rng.integers(2**63, size=batch)
    clips = []
    for j in distributed.shard(batch):
        own = np.random.default_rng(seeds[j])
        ex = data[int(own.integers(len(data)))]
        clips.append(clip_window(ex, frames, card, own).frames)
    return VideoTokenizer.frames_to_tensor(np.stack(clips))


def foreground(x: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """(B, 1, T, H, W) float 0/1: pixels away from their frame's background colour.

    The background is the per-channel median of the frame's border. Small objects on a large
    flat background are a few percent of the pixels; weighting them up (--foreground-weight)
    stops the tokenizer from learning the background alone first.
    """
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1)
    bg = border.median(dim=-1).values[..., None, None]  # (B, 3, T, 1, 1)
    return ((x - bg).abs().amax(dim=1, keepdim=True) > threshold).float()


def loss_weights(fg: torch.Tensor, weight: float, margin: int) -> torch.Tensor:
    """(B, 1, T, H, W) per-pixel loss weights: 1 + weight on the object and on the background
    within `margin` pixels of it, 1 elsewhere.

    Weighting the object alone tilts every pixel the decoder is unsure of towards the object's
    colour (an L1 error there costs weight + 1 times more than one on the background): the
    demo tokenizer drew its objects 30 to 100 % larger in area than they are, covering all of
    the object, so corners rounded and triangles read as circles. A band of the background
    weighted alike leaves an unsure edge pixel unbiased.
    """
    if margin > 0:
        k = 2 * margin + 1
        fg = torch.nn.functional.max_pool3d(fg, (1, k, k), stride=1, padding=(0, margin, margin))
    return 1.0 + weight * fg


def colour_differences(x: torch.Tensor) -> torch.Tensor:
    """(B, 2, T, H, W): the two opponent channels of (B, 3, T, H, W) RGB, G - B and R - (G + B) / 2.

    Brightness is left out. The demo tokenizer trained on RGB error alone learnt brightness
    and red but not G - B: it decodes yellow and magenta to one colour, and green and blue to
    another. --chroma-weight adds these two channels' error to the loss again, weighted.
    """
    r, g, b = x.unbind(dim=1)
    return torch.stack([g - b, r - (g + b) / 2], dim=1)


def check_decoder_only(model: VideoTokenizer, args, state_path: Path) -> None:
    """--decoder-only trains a decoder on a trained encoder's codes: refuse a run whose encoder
    would start from random weights (neither resumed nor wholly in the --init-from file)."""
    if args.resume and state_path.is_file():
        return
    if not args.init_from:
        raise TrainingError(
            "--decoder-only trains the decoder on a trained encoder's codes: give "
            "--init-from DIR_OR_NAME (the checkpoint whose tokens the LM knows)"
        )
    from safetensors import safe_open

    with safe_open(str(args.init_from), "pt") as f:
        saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    missing = [
        k
        for k, v in model.state_dict().items()
        if k.startswith("encoder.") and saved.get(k) != tuple(v.shape)
    ]
    if missing:
        raise TrainingError(
            f"--decoder-only: the encoder of {args.init_from} does not fit this config "
            f"({len(missing)} tensors missing or of another shape, e.g. {missing[0]}); "
            "only the decoder's widths may differ"
        )


def check_crop_frames(crop_frames: int) -> None:
    """The causal tokenizer encodes 1 + 4k frames: refuse another --crop-frames."""
    if crop_frames and (crop_frames - 1) % 4:
        raise TrainingError(f"--crop-frames must be 4k+1 (5, 9, 17, ...); got {crop_frames}")


def check_foreground_margin(margin: int, weight: float) -> None:
    """--foreground-margin widens --foreground-weight's band: refuse it negative or alone."""
    if margin < 0:
        raise TrainingError(f"--foreground-margin must be 0 or more pixels; got {margin}")
    if margin and not weight:
        raise TrainingError(
            "--foreground-margin widens the band --foreground-weight weights: give "
            "--foreground-weight W too (it does nothing alone)"
        )


def parse_scales(spec: str) -> list[int]:
    """--scales "1,2" -> [1, 2]: each a whole number of at least 1."""
    try:
        scales = [int(x) for x in spec.split(",")]
    except ValueError:
        scales = []
    if not scales or min(scales) < 1:
        raise TrainingError(f"--scales must be whole numbers >= 1, comma-separated; got {spec!r}")
    return scales


def train_video_tokenizer(args) -> dict:
    run = Run(args.out, "video-tokenizer", args.config)
    config, card = run.config, run.config.card
    torch.manual_seed(args.seed)
    model = VideoTokenizer(config.video)
    if args.entropy_weight is not None:
        model.quantizer.entropy_loss_weight = args.entropy_weight
    scales = getattr(args, "scales", None) or [1]
    datas = [open_data(args.data, card, seed=args.seed, scale=k) for k in scales]
    # Whole clips by default. The causal convs pad time with copies of frame 0, so a short crop
    # trains only the frames near a clip's start: with 5-frame crops the demo tokenizer went
    # from 21.7 dB on frame 0 to 15.8 dB on frame 16 of a 17-frame clip, drifting and blurring.
    frames = args.crop_frames or card.clip_frames
    batch = args.batch or DEFAULTS["video_tokenizer"].batch

    decoder_only = args.decoder_only
    if decoder_only:
        check_decoder_only(model, args, run.state_path)
        model.encoder.requires_grad_(False)  # the codes stay what the LM was trained on

    def data_index(step: int) -> int:
        # the scales in turn (with --image-batch, each for a clip step and an image step)
        return (step // (2 if args.image_batch else 1)) % len(datas)

    def step_fn(rng, step):
        data = datas[data_index(step)]
        if args.image_batch and step % 2:
            # single frames: the tokenizer is causal, so a frame alone is latent frame 0 of a
            # clip; 9x cheaper than a 9-frame crop, so colours and shapes are seen 9x as often
            x = video_batch(data, card, 1, args.image_batch, rng)
        else:
            x = video_batch(data, card, frames, batch, rng)
        x = x.to(args.device)
        fg = None
        if args.foreground_weight or args.entropy_tokens == "foreground":
            fg = foreground(x)
        if decoder_only:
            rec, aux = model.decoder(model.codes(x)).float(), torch.zeros((), device=x.device)
        else:
            mask = model.token_mask(fg) if args.entropy_tokens == "foreground" else None
            out = model(x, mask)
            rec, aux = out.reconstruction.float(), out.aux_loss
        # the margin is in pixels of the card's size, so the same band at every scale
        margin = args.foreground_margin * scales[data_index(step)]
        w = loss_weights(fg, args.foreground_weight, margin) if args.foreground_weight else 1.0
        err = rec - x
        l1 = (w * err.abs()).mean()
        mse = (w * err.pow(2)).mean()
        loss, extra = l1 + mse + aux, {}
        if args.chroma_weight:
            # linear: the error's own colour-difference channels
            chroma = (w * colour_differences(err).pow(2)).mean()
            loss = loss + args.chroma_weight * chroma
            extra["chroma"] = chroma.detach()
        if adversary is not None:
            loss = loss + adversary(x, rec, rng, extra)
        # range [-1, 1]: peak-to-peak 2
        psnr = 10 * math.log10(4.0 / max(float(mse.detach()), 1e-10))
        return loss, {"l1": l1.detach(), "aux": aux.detach(), "psnr": psnr, **extra}

    adversary = None
    if args.adversarial_weight:
        lr = args.lr or DEFAULTS["video_tokenizer"].lr
        adversary = Adversary(args.adversarial_weight, args.adversarial_warmup, lr, args.device)

    def extra_state() -> dict:
        return {} if adversary is None else adversary.state()

    def load_extra(state: dict) -> None:
        if adversary is not None:
            adversary.load(state)

    return train_loop(run, model, args, step_fn, extra_state, load_extra)
