"""Training: the video tokenizer, the audio tokenizer, then the LM over their tokens.

    python -m models.train video-tokenizer --config demo --out DIR [--steps N] [--resume]
    python -m models.train audio-tokenizer --config demo --out DIR [--steps N] [--resume]
    python -m models.train lm              --config demo --out DIR [--steps N] [--resume]

(the CLI's `videopoet train ...` calls `main_train(argv)`). The three stages share one folder:
each writes its component's `.safetensors` beside `config.json`, so once all three have run,
DIR is a checkpoint that `load_pipeline(DIR)` loads. Training state (weights, optimizer,
step, data order) lives in `DIR/train/<stage>.pt`, written every `--checkpoint-minutes` and at
the end; `--resume` continues from it to `--steps` in total. Losses go to
`DIR/train/<stage>.jsonl`, one JSON object per logged step.

Data (`--data`): `shapes-av` (the synthetic world, generated on the fly from seeds; held-out
combinations are never drawn), or a JSONL file of `{"video": path, "caption": text}` lines,
decoded with ffmpeg (`imageio_ffmpeg.get_ffmpeg_exe()`) in a subprocess with a timeout,
resampled to the model card's frame rate, size and sample rate.

The LM stage tokenizes its clips once with the trained tokenizers (cached in
`DIR/train/lm_data.pt`, with the frozen text encoder's states per caption; kept while the
tokenizers' encoders and codebooks stay the same, and grown when `--clips` grows), then trains every
task at once: one task per batch, so every sequence in a batch has the same length (the
paper's grouping by length), with the text dropped from ~10% of the rows for classifier-free
guidance.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models import pipeline
from models.audio_tokenizer import AudioTokenizer, spectral_peak_hz
from models.conditioning import (
    fit_length,
    fit_samples,
    latent_box_mask,
    resize_frames,
    stylize_control,
)
from models.lm import PrefixLM, prefix_mask
from models.pipeline import COMPONENTS, ModelConfig, TaskShapes
from models.spec import Task
from models.video_tokenizer import VideoTokenizer
from models.vocab import Kind, assemble

log = logging.getLogger(__name__)

STAGES = {"video-tokenizer": "video_tokenizer", "audio-tokenizer": "audio_tokenizer", "lm": "lm"}
FFMPEG_TIMEOUT_S = 120  # a decode taking longer than this is a broken file, not a slow one
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


@dataclass
class StageDefaults:
    steps: int
    batch: int
    lr: float
    warmup: int


# Defaults of the demo recipe (2 CPU cores); `tiny` tests pass their own.
DEFAULTS = {
    "video_tokenizer": StageDefaults(steps=3000, batch=4, lr=2e-3, warmup=100),
    "audio_tokenizer": StageDefaults(steps=1500, batch=8, lr=2e-3, warmup=100),
    "lm": StageDefaults(steps=1500, batch=8, lr=1.5e-3, warmup=100),
}


# ---------------------------------------------------------------------------- data


@dataclass
class Example:
    frames: np.ndarray  # (T, H, W, 3) uint8 at the card's size and frame rate
    audio: np.ndarray  # (N,) float32 mono at the card's sample rate
    caption: str


class ShapesAVData:
    """The Shapes-AV world at a card's size: example i is the training clip of seed base + i."""

    def __init__(self, card, size: int = 1_000_000, seed: int = 0):
        self.card, self.size, self.seed = card, size, seed

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> Example:
        from models import shapes_av

        clip = shapes_av.generate_clip(self.seed + int(i), split="train")
        frames = resize_frames(clip.frames, self.card.height, self.card.width)
        return Example(frames, clip.audio, clip.caption)


def decode_video(path: str | Path, fps: float, width: int, height: int,
                 timeout: float = FFMPEG_TIMEOUT_S) -> np.ndarray:
    """(T, height, width, 3) uint8 frames of a video file at `fps`, via ffmpeg."""
    import imageio_ffmpeg

    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(path),
        "-vf", f"fps={fps},scale={width}:{height}:flags=area", "-f", "rawvideo",
        "-pix_fmt", "rgb24", "-",
    ]
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise ValueError(f"ffmpeg could not decode {path}: {proc.stderr.decode(errors='replace')[-300:]}")
    frames = np.frombuffer(proc.stdout, dtype=np.uint8)
    if frames.size == 0 or frames.size % (width * height * 3):
        raise ValueError(f"{path}: no whole frames decoded")
    return frames.reshape(-1, height, width, 3)


def decode_audio(path: str | Path, sample_rate: int, timeout: float = FFMPEG_TIMEOUT_S) -> np.ndarray | None:
    """(N,) float32 mono at `sample_rate`, or None when the file has no audio stream."""
    import imageio_ffmpeg

    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(path), "-vn",
        "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "-",
    ]
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    if proc.returncode != 0 or not proc.stdout:
        return None
    return np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)


class JsonlVideoData:
    """A JSONL file of {"video": path, "caption": text}; relative paths are from the file's folder.

    Each item is decoded with ffmpeg when asked for; a video with no audio gets silence.
    """

    def __init__(self, path: str | Path, card, timeout: float = FFMPEG_TIMEOUT_S):
        self.path = Path(path)
        self.card, self.timeout = card, timeout
        self.items = []
        for n, line in enumerate(self.path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if "video" not in row:
                raise ValueError(f"{self.path}:{n}: each line needs a \"video\" path (and a \"caption\")")
            video = Path(row["video"])
            self.items.append((video if video.is_absolute() else self.path.parent / video,
                               str(row.get("caption") or "")))
        if not self.items:
            raise ValueError(f"{self.path} lists no videos")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Example:
        video, caption = self.items[int(i)]
        card = self.card
        frames = decode_video(video, card.fps, card.width, card.height, self.timeout)
        audio = decode_audio(video, card.sample_rate, self.timeout)
        n = round(len(frames) / card.fps * card.sample_rate)
        audio = fit_samples(audio if audio is not None else np.zeros(0, np.float32), n)
        return Example(frames, audio, caption)


def open_data(spec: str, card, seed: int = 0):
    """`shapes-av`, `shapes-av:N` (its first N clips only) or a .jsonl path -> Examples."""
    if spec == "shapes-av":
        return ShapesAVData(card, seed=seed)
    if spec.startswith("shapes-av:"):
        return ShapesAVData(card, size=int(spec.split(":", 1)[1]), seed=seed)
    if spec.endswith(".jsonl"):
        return JsonlVideoData(spec, card)
    raise ValueError(f"--data must be 'shapes-av[:N]' or a .jsonl file of {{\"video\", \"caption\"}}; got {spec!r}")


def clip_window(ex: Example, frames: int, card, rng: np.random.Generator) -> Example:
    """A random window of `frames` frames (held at the end if short) and its audio."""
    start = int(rng.integers(0, max(1, len(ex.frames) - frames + 1)))
    f = fit_length(ex.frames[start:], frames)
    s0 = round(start / card.fps * card.sample_rate)
    a = fit_samples(ex.audio[s0:], round(frames / card.fps * card.sample_rate))
    return Example(f, a, ex.caption)


# ---------------------------------------------------------------------------- checkpoints


class Run:
    """One stage's folder, config, training state, log and clock."""

    def __init__(self, out: str | Path, stage: str, config_name: str):
        self.out = Path(out)
        self.stage = stage
        self.component = STAGES[stage]
        (self.out / "train").mkdir(parents=True, exist_ok=True)
        cfg_path = self.out / "config.json"
        if cfg_path.is_file():
            self.config = ModelConfig.from_dict(json.loads(cfg_path.read_text()))
            if self.config.name != config_name:  # --config names the preset of a new folder only
                log.warning("%s already holds a %r model (its config.json): training that; --config %r "
                            "is used only by a folder without one", self.out, self.config.name, config_name)
        else:
            self.config = ModelConfig.from_name(config_name)
            cfg_path.write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        self.state_path = self.out / "train" / f"{self.component}.pt"
        self.log_path = self.out / "train" / f"{self.component}.jsonl"

    def load_state(self, resume: bool) -> dict | None:
        if not self.state_path.is_file():
            return None
        if not resume:
            raise SystemExit(
                f"{self.state_path} exists: pass --resume to continue it, or choose another --out"
            )
        return torch.load(self.state_path, map_location="cpu", weights_only=True)

    def save(self, module: torch.nn.Module, opt: torch.optim.Optimizer, step: int,
             elapsed: float, extra: dict | None = None) -> None:
        """Training state (atomically) and the component's shipped weights."""
        from safetensors.torch import save_file

        state = {"model": module.state_dict(), "optimizer": opt.state_dict(), "step": step,
                 "elapsed_s": elapsed, **(extra or {})}
        tmp = self.state_path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.state_path)
        weights = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
        tmp = self.out / f"{self.component}.safetensors.tmp"
        save_file(weights, str(tmp))
        tmp.replace(self.out / f"{self.component}.safetensors")

    def log(self, record: dict) -> None:
        with self.log_path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def init_path(folder: str | Path, component: str) -> Path:
    """`<component>.safetensors` of a checkpoint folder or shipped name (--init-from)."""
    from models.card import resolve_checkpoint

    weights = (resolve_checkpoint(str(folder)) or Path(folder)) / f"{component}.safetensors"
    if not weights.is_file():
        raise SystemExit(f"--init-from: {weights} does not exist; give a checkpoint folder that holds it")
    return weights


def load_matching(module: torch.nn.Module, path: str) -> list[str]:
    """Load the tensors of a safetensors file whose names and shapes match `module`'s
    (--init-from). Returns the names of module tensors that keep their fresh values; when the
    architectures differ (say, another audio encoder) the rest still starts from the file.
    """
    from safetensors.torch import load_file

    saved, own = load_file(path), module.state_dict()
    usable = {k: v for k, v in saved.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise SystemExit(f"--init-from: no tensor in {path} fits this model; is it the same stage?")
    module.load_state_dict(usable, strict=False)
    fresh = sorted(set(own) - set(usable))
    if fresh:
        log.warning("--init-from %s: %d of %d tensors start fresh (not in the file or another shape): %s",
                    path, len(fresh), len(own), ", ".join(fresh[:8]) + (" ..." if len(fresh) > 8 else ""))
    log.info("starts from %d tensors of %s", len(usable), path)
    return fresh


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warmup, then cosine down to a tenth of `lr` at `steps`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, steps - warmup))
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


class _Stop:
    """Set by SIGTERM / SIGINT: the loop checkpoints and returns at the next step."""

    def __init__(self):
        self.flag = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (tests)
                pass

    def _handle(self, *_):
        self.flag = True


def _autocast(device: str):
    """bfloat16 autocast on CUDA (the quantizers keep their own float32); nothing on CPU."""
    import contextlib

    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _loop(run: Run, module: torch.nn.Module, args, step_fn,
          extra_state: Callable[[], dict] = dict,
          load_extra: Callable[[dict], None] | None = None) -> dict:
    """The shared loop: lr schedule, clipping, logging, checkpoints, resume, time limit.

    extra_state() gives what else a checkpoint keeps (a discriminator); load_extra(state)
    restores it on resume.
    """
    from tqdm import tqdm

    d = DEFAULTS[run.component]
    steps = args.steps or d.steps
    warmup = min(d.warmup, max(1, steps // 10))
    lr = args.lr or d.lr
    module.to(args.device)
    opt = torch.optim.AdamW(module.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    state = run.load_state(args.resume)
    start, elapsed = 0, 0.0
    if state is not None:
        module.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, elapsed = int(state["step"]), float(state["elapsed_s"])
        if load_extra is not None:
            load_extra(state)
        log.info("resuming %s at step %d (%.0f s trained)", run.stage, start, elapsed)
    elif args.init_from:  # main_train has resolved it to the component's file
        load_matching(module, str(args.init_from))
    module.train()
    stop = _Stop()
    t_start = time.perf_counter()
    t_ckpt = time.perf_counter()
    limit = args.max_minutes * 60 if args.max_minutes else math.inf
    bar = tqdm(total=steps, initial=start, desc=run.stage, mininterval=10, file=sys.stderr)
    step, last = start, {}
    ema = None
    stop_at = min(steps, args.stop_at or steps)
    while step < stop_at and not stop.flag:
        t0 = time.perf_counter()
        rng = np.random.default_rng([args.seed, step])  # data order: a function of the step
        # with --max-minutes the cosine follows whichever runs out first, steps or time
        clock = (time.perf_counter() - t_start) / limit * steps if limit < math.inf else 0
        for g in opt.param_groups:
            g["lr"] = lr_at(max(step, int(clock)), steps, lr, warmup)
        with _autocast(args.device):
            loss, parts = step_fn(rng, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = float(torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0))
        opt.step()
        step += 1
        dt = time.perf_counter() - t0
        value = float(loss.detach())
        ema = value if ema is None else 0.95 * ema + 0.05 * value
        last = {"step": step, "loss": round(value, 5), **{k: round(float(v), 5) for k, v in parts.items()},
                "lr": round(opt.param_groups[0]["lr"], 7), "grad_norm": round(gnorm, 4),
                "step_s": round(dt, 3), "elapsed_s": round(elapsed + time.perf_counter() - t_start, 1)}
        if step % args.log_every == 0 or step == steps:
            run.log(last)
        bar.update(1)
        bar.set_postfix(loss=f"{ema:.4f}", refresh=False)
        now = time.perf_counter()
        out_of_time = now - t_start >= limit
        if now - t_ckpt >= args.checkpoint_minutes * 60 or step == stop_at or out_of_time or stop.flag:
            run.save(module, opt, step, elapsed + now - t_start, extra_state())
            t_ckpt = now
        if out_of_time:
            log.info("--max-minutes reached at step %d", step)
            break
    bar.close()
    if step == start:  # nothing ran (already done): keep the files as they are
        return {"step": step}
    run.save(module, opt, step, elapsed + time.perf_counter() - t_start, extra_state())
    return last


# ---------------------------------------------------------------------------- tokenizers


def _video_batch(data, card, frames: int, batch: int, rng) -> torch.Tensor:
    clips = []
    for _ in range(batch):
        ex = data[int(rng.integers(len(data)))]
        clips.append(clip_window(ex, frames, card, rng).frames)
    return VideoTokenizer.frames_to_tensor(np.stack(clips))  # (B, 3, T, H, W)


def foreground(x: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """(B, 1, T, H, W) float 0/1: pixels away from their frame's background colour.

    The background is the per-channel median of the frame's border. Small objects on a large
    flat background are a few percent of the pixels; weighting them up (--foreground-weight)
    stops the tokenizer from learning the background alone first.
    """
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1)
    bg = border.median(dim=-1).values[..., None, None]  # (B, 3, T, 1, 1)
    return ((x - bg).abs().amax(dim=1, keepdim=True) > threshold).float()


def colour_differences(x: torch.Tensor) -> torch.Tensor:
    """(B, 2, T, H, W): the two opponent channels of (B, 3, T, H, W) RGB, G - B and R - (G + B) / 2.

    Brightness is left out. The demo tokenizer trained on RGB error alone learnt brightness
    and red but not G - B: it decodes yellow and magenta to one colour, and green and blue to
    another. --chroma-weight adds these two channels' error to the loss again, weighted.
    """
    r, g, b = x.unbind(dim=1)
    return torch.stack([g - b, r - (g + b) / 2], dim=1)


class FrameDiscriminator(torch.nn.Module):
    """A patch discriminator on single frames: (N, 3, H, W) in [-1, 1] -> (N, 1, H/8, W/8) logits.

    For `--adversarial-weight`. Each logit judges a patch of about 40 pixels, the size of an
    object's corner region here; pixel losses alone let the decoder round corners into blobs.
    Training only: it is kept in the training state, never in the shipped weights.
    """

    def __init__(self, channels: int = 32):
        super().__init__()
        c = channels
        layers: list[torch.nn.Module] = [torch.nn.Conv2d(3, c, 4, 2, 1), torch.nn.LeakyReLU(0.2)]
        for c_in, c_out in ((c, 2 * c), (2 * c, 4 * c)):
            layers += [torch.nn.Conv2d(c_in, c_out, 4, 2, 1), torch.nn.GroupNorm(8, c_out),
                       torch.nn.LeakyReLU(0.2)]
        layers.append(torch.nn.Conv2d(4 * c, 1, 3, 1, 1))
        self.net = torch.nn.Sequential(*layers)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames)


def _frames(x: torch.Tensor, pick: torch.Tensor) -> torch.Tensor:
    """Frames `pick` of a (B, 3, T, H, W) batch counted clip by clip, as (len(pick), 3, H, W)."""
    return x.transpose(1, 2).flatten(0, 1)[pick]


def train_video_tokenizer(args) -> dict:
    run = Run(args.out, "video-tokenizer", args.config)
    config, card = run.config, run.config.card
    torch.manual_seed(args.seed)
    model = VideoTokenizer(config.video)
    if args.entropy_weight is not None:
        model.quantizer.entropy_loss_weight = args.entropy_weight
    data = open_data(args.data, card, seed=args.seed)
    # Whole clips by default. The causal convs pad time with copies of frame 0, so a short crop
    # trains only the frames near a clip's start: with 5-frame crops the demo tokenizer went
    # from 21.7 dB on frame 0 to 15.8 dB on frame 16 of a 17-frame clip, drifting and blurring.
    frames = args.crop_frames or card.clip_frames
    batch = args.batch or DEFAULTS["video_tokenizer"].batch

    decoder_only = args.decoder_only
    if decoder_only:
        _check_decoder_only(model, args, run.state_path)
        model.encoder.requires_grad_(False)  # the codes stay what the LM was trained on

    def step_fn(rng, step):
        if args.image_batch and step % 2:
            # single frames: the tokenizer is causal, so a frame alone is latent frame 0 of a
            # clip; 9x cheaper than a 9-frame crop, so colours and shapes are seen 9x as often
            x = _video_batch(data, card, 1, args.image_batch, rng)
        else:
            x = _video_batch(data, card, frames, batch, rng)
        x = x.to(args.device)
        fg = foreground(x) if args.foreground_weight or args.entropy_tokens == "foreground" else None
        if decoder_only:
            rec, aux = model.decoder(model.codes(x)).float(), torch.zeros((), device=x.device)
        else:
            out = model(x, model.token_mask(fg) if args.entropy_tokens == "foreground" else None)
            rec, aux = out.reconstruction.float(), out.aux_loss
        w = 1.0 + args.foreground_weight * fg if args.foreground_weight else 1.0
        err = rec - x
        l1 = (w * err.abs()).mean()
        mse = (w * err.pow(2)).mean()
        loss, extra = l1 + mse + aux, {}
        if args.chroma_weight:
            chroma = (w * colour_differences(err).pow(2)).mean()  # linear: the error's own channels
            loss = loss + args.chroma_weight * chroma
            extra["chroma"] = chroma.detach()
        if disc is not None:
            loss = loss + _adversarial(x, rec, rng, extra)
        psnr = 10 * math.log10(4.0 / max(float(mse.detach()), 1e-10))  # range [-1, 1]: peak-to-peak 2
        return loss, {"l1": l1.detach(), "aux": aux.detach(), "psnr": psnr, **extra}

    # --adversarial-weight: a frame discriminator, trained here with its own optimizer (hinge
    # loss); its term joins the tokenizer's loss once it has had --adversarial-warmup steps
    disc = d_opt = None
    d_steps = 0
    if args.adversarial_weight:
        disc = FrameDiscriminator().to(args.device)
        d_opt = torch.optim.AdamW(disc.parameters(), lr=args.lr or DEFAULTS["video_tokenizer"].lr,
                                  betas=(0.5, 0.9), weight_decay=0.0)

    def _adversarial(x, rec, rng, extra) -> torch.Tensor:
        nonlocal d_steps
        n = x.shape[0] * x.shape[2]
        pick = torch.from_numpy(np.sort(rng.choice(n, min(n, 16), replace=False))).to(x.device)
        real, fake = _frames(x, pick), _frames(rec, pick)
        disc.requires_grad_(True)
        d_loss = F.relu(1 - disc(real)).mean() + F.relu(1 + disc(fake.detach())).mean()
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()
        d_steps += 1
        extra["disc"] = d_loss.detach()
        disc.requires_grad_(False)  # the tokenizer's backward passes through it, leaving it be
        g_loss = -disc(fake).mean()
        extra["adv"] = g_loss.detach()
        return (args.adversarial_weight if d_steps > args.adversarial_warmup else 0.0) * g_loss

    def extra_state() -> dict:
        if disc is None:
            return {}
        return {"discriminator": disc.state_dict(), "disc_optimizer": d_opt.state_dict(), "disc_steps": d_steps}

    def load_extra(state: dict) -> None:
        # a run that adds the discriminator to a trained tokenizer starts it fresh
        nonlocal d_steps
        if disc is not None and "discriminator" in state:
            disc.load_state_dict(state["discriminator"])
            d_opt.load_state_dict(state["disc_optimizer"])
            d_steps = int(state["disc_steps"])

    return _loop(run, model, args, step_fn, extra_state, load_extra)


def _check_decoder_only(model: VideoTokenizer, args, state_path: Path) -> None:
    """--decoder-only trains a decoder on a trained encoder's codes: refuse a run whose encoder
    would start from random weights (neither resumed nor wholly in the --init-from file)."""
    if args.resume and state_path.is_file():
        return
    if not args.init_from:
        raise SystemExit("--decoder-only trains the decoder on a trained encoder's codes: give "
                         "--init-from DIR_OR_NAME (the checkpoint whose tokens the LM knows)")
    from safetensors import safe_open

    with safe_open(str(args.init_from), "pt") as f:
        saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    missing = [k for k, v in model.state_dict().items()
               if k.startswith("encoder.") and saved.get(k) != tuple(v.shape)]
    if missing:
        raise SystemExit(f"--decoder-only: the encoder of {args.init_from} does not fit this config "
                         f"({len(missing)} tensors missing or of another shape, e.g. {missing[0]}); "
                         "only the decoder's widths may differ")


def _stft_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Multi-resolution STFT distance: log(1 + magnitude) and spectral convergence.

    log1p, not log(mag + tiny): with tones most bins are near silent, and a tiny epsilon makes
    matching their noise floor dominate the loss instead of the partials that are heard.
    """
    total = x.new_zeros(())
    for n_fft in (256, 512, 1024):
        win = torch.hann_window(n_fft, device=x.device)
        sx = torch.stft(x, n_fft, n_fft // 4, window=win, return_complex=True).abs()
        sy = torch.stft(y, n_fft, n_fft // 4, window=win, return_complex=True).abs()
        total = total + (torch.log1p(sx) - torch.log1p(sy)).abs().mean()
        total = total + (sx - sy).norm() / (sy.norm() + 1e-7)
    return total / 3


def shift_distance(model: AudioTokenizer, x: torch.Tensor, delayed: torch.Tensor) -> torch.Tensor:
    """How far the encoder's latents (before quantizing) move when the audio is delayed by
    less than a frame, relative to how much they differ between clips, frame by frame (the
    variance over the batch at each frame, so neither a constant offset nor a few frames made
    huge can shrink it); the first and last frames are left out.

    For --shift-weight. A tone delayed by half a millisecond sounds the same, and a video
    cannot say which phase its soundtrack has; latents that follow the phase make codes an LM
    cannot learn to write from a video. (The spectrum encoder cannot follow it at all.)
    """
    z = model.encoder(torch.cat([x, delayed]).unsqueeze(1))[..., 1:-1]  # (2B, D, F - 2)
    a, b = z.chunk(2)
    spread = a.var(dim=0).mean(0) + b.var(dim=0).mean(0)  # (F - 2,)
    return ((a - b).pow(2).mean(dim=(0, 1)) / spread.clamp_min(1e-8)).mean()


def train_audio_tokenizer(args) -> dict:
    run = Run(args.out, "audio-tokenizer", args.config)
    config, card = run.config, run.config.card
    torch.manual_seed(args.seed)
    model = AudioTokenizer(config.audio)
    data = open_data(args.data, card, seed=args.seed)
    hop = config.audio.hop_length
    n = max(1, round((args.crop_seconds or 0.5) * config.audio.sample_rate / hop)) * hop
    batch = args.batch or DEFAULTS["audio_tokenizer"].batch

    lead = hop // 2 if args.shift_weight else 0  # the longest delay: half a frame
    wave_weight = args.wave_weight
    if wave_weight is None:  # a spectrum encoder sees no phase: the decoder cannot match the wave
        wave_weight = 1.0 if config.audio.encoder_input == "wave" else 0.0

    def step_fn(rng, step):
        rows = []
        for _ in range(batch):
            audio = data[int(rng.integers(len(data)))].audio
            start = int(rng.integers(0, max(1, len(audio) - n - lead + 1)))
            rows.append(fit_samples(audio[start:], n + lead))
        both = torch.from_numpy(np.stack(rows)).to(args.device)
        x = both[:, lead:]
        target = voiced = None
        if model.harmonic is not None:  # its pitch: the input's strongest partial, where loud
            target, voiced = spectral_peak_hz(x, hop, config.audio.sample_rate)
        out = model(x, None if target is None else target * voiced)
        rec = out.reconstruction.float()
        wave = (rec - x).abs().mean()
        spec = _stft_loss(rec, x)
        loss = wave_weight * wave + spec + out.aux_loss
        parts = {"wave_l1": wave.detach(), "stft": spec.detach(), "aux": out.aux_loss.detach()}
        if out.pitch is not None:  # ... which it plays while it learns to predict it
            miss = (torch.log2(out.pitch.float()) - torch.log2(target)).abs()
            pitch = (miss * voiced).sum() / voiced.sum().clamp_min(1)
            loss = loss + pitch
            parts["pitch"] = pitch.detach()
        if args.shift_weight:
            delay = int(rng.integers(1, lead + 1))
            shift = shift_distance(model, x, both[:, lead - delay : lead - delay + n])
            loss = loss + args.shift_weight * shift
            parts["shift"] = shift.detach()
        return loss, parts

    return _loop(run, model, args, step_fn)


# ---------------------------------------------------------------------------- LM data


def token_digest(path: Path) -> str:
    """A digest of what decides a tokenizer's codes: its encoder's and quantizer's tensors.

    A decoder trained again on frozen codes (`--decoder-only`) leaves it unchanged, so the
    LM's tokenized clips stay valid; any change to the encoder or the codebooks changes it."""
    from safetensors import safe_open

    h = hashlib.sha1()
    with safe_open(str(path), "pt") as f:
        for name in sorted(f.keys()):
            if name.startswith(("encoder.", "quantizer.")):
                t = f.get_tensor(name).contiguous()
                h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
                h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def load_tokenizers(run: Run) -> tuple[VideoTokenizer, AudioTokenizer]:
    try:
        return pipeline.load_tokenizers(run.out, run.config)
    except FileNotFoundError as exc:
        raise SystemExit(f"{exc}: run `train video-tokenizer` and `train audio-tokenizer` "
                         f"--out {run.out} first") from None


@torch.no_grad()
def tokenize_examples(exs: list[Example], video_tok: VideoTokenizer, audio_tok: AudioTokenizer,
                      clip_samples: int, device: str = "cpu") -> tuple[torch.Tensor, ...]:
    """Whole-clip examples -> their video, stylize-control and audio tokens, on the CPU."""
    frames = np.stack([e.frames for e in exs])
    video = video_tok.encode(VideoTokenizer.frames_to_tensor(frames).to(device)).cpu()
    ctrl = np.stack([stylize_control(e.frames) for e in exs])
    control = video_tok.encode(VideoTokenizer.frames_to_tensor(ctrl).to(device)).cpu()
    wav = torch.from_numpy(np.stack([fit_samples(e.audio, clip_samples) for e in exs]))
    return video, control, audio_tok.encode(wav.to(device)).cpu()


@torch.no_grad()
def encode_captions(encoder, captions: list[str]) -> dict[str, torch.Tensor]:
    """Each distinct caption encoded once: {"caption": (N,) index per example, "text": (C,
    longest, D) float16 states, "text_len": (C,)}, C distinct captions."""
    unique = sorted(set(captions))
    states, masks = [], []
    for i in range(0, len(unique), 64):
        s, m = encoder(unique[i : i + 64])
        states.append(s)
        masks.append(m)
    states, masks = torch.cat(states), torch.cat(masks)
    longest = max(1, int(masks.sum(1).max()))
    index = {c: k for k, c in enumerate(unique)}
    return {"caption": torch.tensor([index[c] for c in captions]),
            "text": states[:, :longest].to(torch.float16), "text_len": masks.sum(1)}


@torch.no_grad()
def build_lm_data(run: Run, data, n_clips: int, seed: int, batch: int = 16, device: str = "cpu",
                  start: int = 0) -> dict:
    """Tokenize clips [start, n_clips) (video, control video, audio; n_clips at most a file's
    length) and encode their captions once. Which clips, in which order, is a function of the
    data and seed alone, so clips [0, start) tokenized earlier and these are the clips one call
    from 0 would take (a long video's window is drawn from a stream of the call's own)."""
    from tqdm import tqdm

    from models.text_encoder import load_text_encoder

    card = run.config.card
    video_tok, audio_tok = (m.to(device) for m in load_tokenizers(run))
    shapes = TaskShapes(run.config)
    rng = np.random.default_rng([seed, 7])
    indices = rng.permutation(len(data))[:n_clips] if not isinstance(data, ShapesAVData) else np.arange(n_clips)
    if start:  # windows of the new clips: a stream of their own, not the first call's
        rng = np.random.default_rng([seed, 7, start])
    video, control, audio, captions = [], [], [], []
    for i in tqdm(range(start, n_clips, batch), desc="tokenize", mininterval=10, file=sys.stderr):
        exs = [clip_window(data[int(j)], card.clip_frames, card, rng) for j in indices[i : i + batch]]
        for out, tokens in zip((video, control, audio),
                               tokenize_examples(exs, video_tok, audio_tok, shapes.clip_samples, device)):
            out.append(tokens)
        captions += [e.caption for e in exs]
    encoder = load_text_encoder(run.config.text_encoder, run.config.text_encoder_path, run.config.text_tokens)
    return {
        "video": torch.cat(video).to(torch.int16),  # (N, t, h, w)
        "control": torch.cat(control).to(torch.int16),
        "audio": torch.cat(audio).to(torch.int16),  # (N, L, F)
        **encode_captions(encoder, captions),
        "tokenizers": [token_digest(run.out / f"{n}.safetensors") for n in COMPONENTS[:2]],
    }


def join_lm_data(old: dict, new: dict) -> dict:
    """Clips of `old` then those of `new` (same tokenizers), with one table of caption states."""
    if old["tokenizers"] != new["tokenizers"]:
        raise ValueError("the two sets of clips were tokenized by different tokenizers")
    longest = max(old["text"].shape[1], new["text"].shape[1])

    def pad(text: torch.Tensor) -> torch.Tensor:
        return F.pad(text, (0, 0, 0, longest - text.shape[1]))

    return {
        **{k: torch.cat([old[k], new[k]]) for k in ("video", "control", "audio", "text_len")},
        "caption": torch.cat([old["caption"], new["caption"] + len(old["text"])]),
        "text": torch.cat([pad(old["text"]), pad(new["text"])]),
        "tokenizers": old["tokenizers"],
    }


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


def _lm_batch(task: Task, d: dict, rows: np.ndarray, layout, vocab, shapes: TaskShapes, rng,
              changed_weight: float = 1.0, text_drop: float | None = None) -> dict:
    """One batch of one task, mirroring the pipeline's conditioning (Pipeline._run_group).

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
    p_drop = text_drop if text_drop is not None else (
        TEXT_DROP_CROSS_MODAL if task in (Task.video_to_audio, Task.audio_to_video) else TEXT_DROP)
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
    return {"batch": assemble(layout, vocab, text=full, text_mask=mask, batch_size=B, **content),
            "text_len": int(text_len.max()), "visual_weight": visual_weight}


def _to_device(batch, device: str):
    from dataclasses import replace

    if device == "cpu":
        return batch
    move = lambda t: None if t is None else t.to(device)  # noqa: E731
    return replace(batch, ids=move(batch.ids), key_valid=move(batch.key_valid), text=move(batch.text),
                   forced=move(batch.forced))


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
    content = (torch.arange(layout.length) >= layout.prefix_len) & (torch.tensor(layout.structure) < 0)
    ids = batch.ids.clone()
    B = ids.shape[0]
    pick = (torch.rand(B, layout.length, generator=generator) < rates[:, None]) & content[None]
    for kind in kinds[content].unique().tolist():
        lo, hi = vocab.code_range(kind)
        where = pick & (kinds == kind)[None]
        ids[where] = torch.randint(lo, hi, (int(where.sum()),), generator=generator)
    return ids


def token_losses(lm: PrefixLM, batch, vocab, text_len: int,
                 inputs: torch.Tensor | None = None) -> dict[int, torch.Tensor]:
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
    h = lm(x, pos, prefix_mask(batch.key_valid[:, keep], P2), caption=caption, grid=grid)  # (B, S', C)
    # hidden at original position i predicts the token at i + 1; outputs start at P
    kinds = torch.tensor(layout.kinds)
    structure = torch.tensor(layout.structure)
    out = {}
    for kind in sorted(set(layout.kinds[P:])):
        if kind in (Kind.special, Kind.text):
            continue
        targets_at = torch.nonzero((kinds == kind) & (structure < 0) & (torch.arange(S) >= P)).squeeze(1)
        targets_at = targets_at.to(device)
        lo, hi = vocab.code_range(kind)
        hidden = h[:, targets_at - 1 - (S - len(pos))]  # every dropped position lies before P
        logits = lm.logits(hidden, lo, hi).float()  # (B, n, hi - lo)
        target = batch.ids[:, targets_at] - lo
        out[kind] = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")
    return out


def lm_loss(lm: PrefixLM, batch, vocab, text_len: int,
            visual_weight: torch.Tensor | None = None, inputs: torch.Tensor | None = None) -> torch.Tensor:
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


def task_weights(spec: str) -> dict[Task, float]:
    """TASK_WEIGHTS with --task-weights' "task=w,task=w" changes (0 leaves a task out)."""
    weights = dict(TASK_WEIGHTS)
    for item in filter(None, (part.strip() for part in (spec or "").split(","))):
        name, _, value = item.partition("=")
        try:
            task, w = Task(name.strip()), float(value)
        except ValueError:
            raise SystemExit(
                f"--task-weights: {item!r} is not task=weight; tasks: "
                f"{', '.join(t.value for t in TASK_WEIGHTS)}; weights are numbers >= 0"
            ) from None
        if task not in TASK_WEIGHTS or not w >= 0:
            raise SystemExit(f"--task-weights: {item!r}: the LM trains {', '.join(t.value for t in TASK_WEIGHTS)}, "
                             "each with a weight >= 0")
        weights[task] = w
    if not any(weights.values()):
        raise SystemExit("--task-weights: every task has weight 0; give at least one a weight > 0")
    return weights


def train_lm(args) -> dict:
    run = Run(args.out, "lm", args.config)
    config, card = run.config, run.config.card
    data_path = run.out / "train" / "lm_data.pt"
    digests = [token_digest(run.out / f"{n}.safetensors") for n in COMPONENTS[:2]
               if (run.out / f"{n}.safetensors").is_file()]
    d = torch.load(data_path, weights_only=True) if data_path.is_file() else None
    source = f"{args.data} (seed {args.seed})"  # which clips, in which order
    if d is not None and d["tokenizers"] != digests:
        log.info("the tokenizers' codes have changed since %s was written: tokenizing again", data_path)
        d = None
    elif d is not None and d.get("source", source) != source:  # files before the key: as given
        log.info("%s holds clips of %s, not %s: tokenizing again", data_path, d["source"], source)
        d = None
    have = 0 if d is None else len(d["video"])
    data = open_data(args.data, card, seed=args.seed + 1) if have < args.clips else None
    want = 0 if data is None else args.clips if isinstance(data, ShapesAVData) else min(args.clips, len(data))
    if have < want:  # a larger --clips adds clips to those already tokenized
        log.info("tokenizing clips %d to %d for the LM", have, want)
        t0 = time.perf_counter()
        more = build_lm_data(run, data, want, args.seed, device=args.device, start=have)
        d = more if d is None else join_lm_data(d, more)
        d["source"] = source
        torch.save(d, data_path)
        log.info("tokenized in %.0f s", time.perf_counter() - t0)
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

    def step_fn(rng, step):
        task = tasks[int(rng.choice(len(tasks), p=weights))]
        rows = rng.integers(0, N, batch)
        b = _lm_batch(task, d, rows, layouts[task], vocab, shapes, rng, args.changed_weight)
        inputs = None
        if args.input_noise:
            g = torch.Generator().manual_seed(int(rng.integers(2**62)))
            rates = torch.from_numpy(rng.uniform(0, args.input_noise, batch)).float()
            inputs = corrupt_outputs(b["batch"], vocab, rates, g)
        loss = lm_loss(lm, _to_device(b["batch"], args.device), vocab, b["text_len"], b["visual_weight"],
                       inputs)
        return loss, {f"loss_{task.value}": loss.detach()}

    return _loop(run, lm, args, step_fn)


# ---------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="videopoet train", description=__doc__.split("\n\n")[0])
    p.add_argument("stage", choices=list(STAGES), help="what to train (in this order)")
    p.add_argument("--config", default="demo", help="model preset for a new --out (tiny, demo, ...)")
    p.add_argument("--out", required=True, help="checkpoint folder shared by the three stages")
    p.add_argument("--steps", type=int, default=0, help="total optimizer steps (default: the stage's)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/train/<stage>.pt")
    p.add_argument("--data", default="shapes-av", help="'shapes-av' or a JSONL of {video, caption}")
    p.add_argument("--batch", type=int, default=0, help="batch size (default: the stage's)")
    p.add_argument("--lr", type=float, default=0.0, help="peak learning rate (default: the stage's)")
    p.add_argument("--crop-frames", type=int, default=0,
                   help="video tokenizer: frames per crop (4k+1; default: the card's whole clip)")
    p.add_argument("--image-batch", type=int, default=0,
                   help="video tokenizer: every other step trains on this many single frames")
    p.add_argument("--foreground-weight", type=float, default=0.0,
                   help="video tokenizer: extra loss weight on pixels unlike the frame's border")
    p.add_argument("--entropy-tokens", choices=["all", "foreground"], default="all",
                   help="video tokenizer: the tokens LFQ's entropy loss sees; foreground: only "
                        "those whose patch holds the object, so flat background does not crowd "
                        "the codebook")
    p.add_argument("--chroma-weight", type=float, default=0.0,
                   help="video tokenizer: extra loss weight on the colour-difference channels "
                        "(G-B, R-(G+B)/2), foreground-weighted like the pixel loss")
    p.add_argument("--adversarial-weight", type=float, default=0.0,
                   help="video tokenizer: weight of a frame discriminator's hinge loss (0: off)")
    p.add_argument("--adversarial-warmup", type=int, default=200,
                   help="video tokenizer: discriminator steps before its loss reaches the tokenizer")
    p.add_argument("--decoder-only", action="store_true",
                   help="video tokenizer: train only the decoder, on the frozen codes of the "
                        "--init-from encoder (tokens unchanged, so an LM trained on them stays "
                        "valid; the decoder may be wider, see decoder_channels in config.json)")
    p.add_argument("--entropy-weight", type=float, default=None,
                   help="video tokenizer: LFQ entropy loss weight (default: the config's)")
    p.add_argument("--crop-seconds", type=float, default=0.0, help="audio tokenizer: seconds per crop")
    p.add_argument("--wave-weight", type=float, default=None,
                   help="audio tokenizer: weight of the waveform L1 term (0: spectral loss only; "
                        "default 1, or 0 with the spectrum encoder)")
    p.add_argument("--shift-weight", type=float, default=0.0,
                   help="audio tokenizer: weight of a term that keeps the latents still when the "
                        "audio is delayed by under half a frame (codes of the sound, not its phase)")
    p.add_argument("--clips", type=int, default=1000,
                   help="lm: clips to tokenize for training (cached in DIR/train/lm_data.pt; a "
                        "larger value later tokenizes only the clips it adds)")
    p.add_argument("--changed-weight", type=float, default=1.0,
                   help="lm: loss weight of the visual tokens that do not copy the previous "
                        "latent frame's (all of frame 0, then where motion shows); 1: every "
                        "token alike")
    p.add_argument("--input-noise", type=float, default=0.0,
                   help="lm: each row replaces its output tokens, as the LM reads them back, by "
                        "random codes with a probability drawn from [0, P] (targets unchanged), "
                        "so the LM must read the task's input, not only copy its own output")
    p.add_argument("--task-weights", default="",
                   help="lm: how often each task is drawn, e.g. 'video_to_audio=4,inpaint=0' "
                        "(changes to the defaults: " + ", ".join(f"{t.value}={w:g}" for t, w in TASK_WEIGHTS.items())
                        + "; 0 leaves a task out)")
    p.add_argument("--init-from", default="",
                   help="a new run starts from the stage's weights in this checkpoint folder "
                        "(fine-tuning; the optimizer starts fresh); --resume state wins over it")
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop (with a checkpoint) after this")
    p.add_argument("--stop-at", type=int, default=0,
                   help="stop (with a checkpoint) at this step; --resume goes on to --steps")
    p.add_argument("--checkpoint-minutes", type=float, default=3.0, help="checkpoint interval")
    p.add_argument("--log-every", type=int, default=10, help="log a loss line every N steps")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--device", default="auto",
                   help="auto (cuda when a GPU is seen, else cpu), cpu or cuda; bfloat16 autocast on cuda")
    p.add_argument("--seed", type=int, default=0,
                   help="torch and batch-order seed; with shapes-av it also picks the clips: "
                        "example i is the clip of seed SEED + i (the lm stage: SEED + 1 + i), so a "
                        "--seed past an earlier run's --seed + --clips gives clips it never saw")
    return p


def main_train(argv: Sequence[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    try:
        args.device = pipeline.resolve_device(args.device)
    except ValueError as exc:
        raise SystemExit(f"--device: {exc}") from None
    if args.crop_frames and (args.crop_frames - 1) % 4:
        raise SystemExit(f"--crop-frames must be 4k+1 (5, 9, 17, ...); got {args.crop_frames}")
    task_weights(args.task_weights)  # a typo fails now, not after tokenizing
    if args.init_from:  # a wrong folder fails now, not after tokenizing
        args.init_from = init_path(args.init_from, STAGES[args.stage])
    fn = {"video-tokenizer": train_video_tokenizer, "audio-tokenizer": train_audio_tokenizer,
          "lm": train_lm}[args.stage]
    result = fn(args)
    log.info("%s done: %s", args.stage, result)
    return result


if __name__ == "__main__":
    main_train()
