"""Stage 2: the audio tokenizer (RVQ codes), trained on audio crops with a multi-resolution STFT
loss, a waveform L1 term, the harmonic source's pitch and, optionally, a term that keeps the
latents still under sub-frame delays (`--shift-weight`)."""

from __future__ import annotations

import numpy as np
import torch

from models.audio_tokenizer import AudioTokenizer, spectral_peak_hz
from models.conditioning import fit_samples
from models.train import distributed
from models.train.data import open_data
from models.train.loop import DEFAULTS, Run, train_loop


def stft_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
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
        seeds = rng.integers(2**63, size=batch)  # one stream per example of the global batch
        for j in distributed.shard(batch):  # this process's examples of it
            own = np.random.default_rng(seeds[j])
            audio = data[int(own.integers(len(data)))].audio
            start = int(own.integers(0, max(1, len(audio) - n - lead + 1)))
            rows.append(fit_samples(audio[start:], n + lead))
        both = torch.from_numpy(np.stack(rows)).to(args.device)
        x = both[:, lead:]
        target = voiced = None
        if model.harmonic is not None:  # its pitch: the input's strongest partial, where loud
            target, voiced = spectral_peak_hz(x, hop, config.audio.sample_rate)
        out = model(x, None if target is None else target * voiced)
        rec = out.reconstruction.float()
        wave = (rec - x).abs().mean()
        spec = stft_loss(rec, x)
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

    return train_loop(run, model, args, step_fn)
