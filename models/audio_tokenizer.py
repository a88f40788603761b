"""SoundStream-style audio tokenizer: SEANet conv encoder/decoder with residual VQ.

Mono audio in [-1, 1] shaped (B, N) <-> codes (B, L, F): L residual levels (level 0 is the
coarsest) by F frames, F = N // hop_length. Paper use: 16 kHz, hop 320 -> 50 frames/s, so
2.125 s (34,000 samples) -> 106 frames x 4 levels x 1,024 codes. The LM sees the codes
level by level, coarse to fine: `flatten_codes` / `unflatten_codes`.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, NamedTuple

import torch
from einops import rearrange
from torch import nn
from vector_quantize_pytorch import ResidualVQ


ENCODER_INPUTS = ("wave", "spectrum")


@dataclass
class AudioTokenizerConfig:
    sample_rate: int = 16000
    channels: int = 32  # encoder width after the stem; doubles at every stride
    strides: tuple[int, ...] = (2, 4, 5, 8)  # product 320: 50 frames/s at 16 kHz
    latent_dim: int = 128  # width of the quantized latent (EnCodec uses 128 too)
    num_quantizers: int = 4  # residual VQ levels
    codebook_size: int = 1024  # per level
    # reset codes used less than this (EMA) to batch vectors: live codebooks; 0: off (tests)
    dead_code_threshold: float = 2.0
    # "wave" (SEANet) or "spectrum" (log |STFT|: no codes for a phase a video cannot predict)
    encoder_input: str = "wave"
    # DDSP-style sines the decoder adds (0: none): a conv decoder alone cannot hold a steady pitch
    harmonics: int = 0

    # derived in __post_init__
    hop_length: int = field(init=False)  # samples per frame = prod(strides)
    frame_rate: float = field(init=False)  # frames per second

    def __post_init__(self):
        self.strides = tuple(int(s) for s in self.strides)
        if not self.strides or min(self.strides) < 2:
            raise ValueError(f"strides must each be >= 2; got {self.strides}")
        if self.encoder_input not in ENCODER_INPUTS:
            raise ValueError(
                f"encoder_input must be one of {ENCODER_INPUTS}; got {self.encoder_input!r}"
            )
        if self.harmonics < 0:
            raise ValueError(f"harmonics must be >= 0 (0: none); got {self.harmonics}")
        self.hop_length = math.prod(self.strides)
        self.frame_rate = self.sample_rate / self.hop_length

    def num_frames(self, num_samples: int) -> int:
        """Frames for `num_samples` samples; a trailing partial hop is dropped."""
        return num_samples // self.hop_length

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the constructor fields, for config.json."""
        d = asdict(self)
        return {f.name: d[f.name] for f in fields(self) if f.init}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AudioTokenizerConfig:
        names = {f.name for f in fields(cls) if f.init}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_name(cls, name: str) -> AudioTokenizerConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown audio tokenizer preset {name!r}; one of {sorted(PRESETS)}")
        return cls(**PRESETS[name])


PRESETS: dict[str, dict[str, Any]] = {
    # tests: random init, fast on CPU
    "tiny": {"channels": 4, "latent_dim": 16, "codebook_size": 64, "dead_code_threshold": 0.0},
    # the shipped checkpoint: Shapes-AV audio is a few gliding tones
    "demo": {
        "channels": 8,  # pure tones need little width, and narrow trains fast on 2 CPU cores
        "latent_dim": 64,
        "codebook_size": 256,  # plenty for tones; keeps the LM's audio vocabulary at 4 x 256
    },
    # paper-shaped: 4 x 1,024 codes (the LM vocabulary's 4,096 audio codes)
    "paper": {"channels": 32, "latent_dim": 128, "codebook_size": 1024},
}


# ---------------------------------------------------------------------------- layers


class ResidualUnit(nn.Module):
    """ELU -> dilated conv (k=7) -> ELU -> conv (k=1), plus the input. Length is kept."""

    def __init__(self, ch: int, dilation: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ELU(),
            nn.Conv1d(ch, ch, 7, dilation=dilation, padding=3 * dilation),
            nn.ELU(),
            nn.Conv1d(ch, ch, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def _encoder_block(ch: int, stride: int) -> nn.Sequential:
    """Residual units at `ch`, then a strided conv to 2*ch: length N -> N / stride exactly.

    Kernel 2*stride with `stride` samples of padding in total: (N + s - 2s) / s + 1 = N / s.
    """
    return nn.Sequential(
        *(ResidualUnit(ch, d) for d in (1, 3, 9)),
        nn.ELU(),
        nn.ConstantPad1d(((stride + 1) // 2, stride // 2), 0.0),
        nn.Conv1d(ch, 2 * ch, 2 * stride, stride=stride),
    )


def _decoder_block(ch: int, stride: int) -> nn.Sequential:
    """Transposed conv from `ch` to ch/2: length F -> F * stride exactly, then residual units.

    (F - 1)s - 2p + 2s + op = Fs needs 2p - op = s: p = ceil(s / 2), op = s % 2.
    """
    return nn.Sequential(
        nn.ELU(),
        nn.ConvTranspose1d(
            ch,
            ch // 2,
            2 * stride,
            stride=stride,
            padding=(stride + 1) // 2,
            output_padding=stride % 2,
        ),
        *(ResidualUnit(ch // 2, d) for d in (1, 3, 9)),
    )


class Encoder(nn.Module):
    def __init__(self, config: AudioTokenizerConfig):
        super().__init__()
        ch = config.channels
        layers: list[nn.Module] = [nn.Conv1d(1, ch, 7, padding=3)]
        for stride in config.strides:
            layers.append(_encoder_block(ch, stride))
            ch *= 2
        layers += [nn.ELU(), nn.Conv1d(ch, config.latent_dim, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)  # (B, 1, N) -> (B, D, N / hop)


class SpectrumEncoder(nn.Module):
    """log(1 + |STFT|) per frame -> latents: what the sound is, never the phase of the wave.

    The window is two hops long and centred on its frame (half a hop of zeros at each end), so
    there is one spectrum per frame, F = N / hop, as in `Encoder`. Delaying the audio by a few
    samples barely changes a magnitude spectrum, so the codes stay.
    """

    def __init__(self, config: AudioTokenizerConfig):
        super().__init__()
        self.hop = config.hop_length
        ch = config.channels * 2 ** len(config.strides)  # the width the wave encoder ends at
        self.layers = nn.Sequential(
            nn.Conv1d(self.hop + 1, ch, 3, padding=1),
            *(ResidualUnit(ch, d) for d in (1, 3)),
            nn.ELU(),
            nn.Conv1d(ch, config.latent_dim, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.pad(x.squeeze(1).float(), (self.hop // 2, self.hop - self.hop // 2))
        window = torch.hann_window(2 * self.hop, device=x.device)  # not a buffer: meta-safe
        spec = torch.stft(
            x, 2 * self.hop, self.hop, window=window, center=False, return_complex=True
        ).abs()
        return self.layers(torch.log1p(spec))  # (B, 1, N) -> (B, D, N / hop)


class Decoder(nn.Module):
    def __init__(self, config: AudioTokenizerConfig):
        super().__init__()
        ch = config.channels * 2 ** len(config.strides)
        layers: list[nn.Module] = [nn.Conv1d(config.latent_dim, ch, 7, padding=3)]
        for stride in reversed(config.strides):
            layers.append(_decoder_block(ch, stride))
            ch //= 2
        layers += [nn.ELU(), nn.Conv1d(ch, 1, 7, padding=3)]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)  # (B, D, F) -> (B, 1, F * hop)


F0_RANGE_HZ = (40.0, 2560.0)  # the pitches the harmonic source can play (six octaves)


def spectral_peak_hz(
    audio: torch.Tensor, hop: int, sample_rate: int, floor: float = 1e-3
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N) audio -> the strongest partial's frequency per frame (B, N // hop), in Hz, from a
    2048-sample window centred on each frame (parabolic interpolation between bins), and where
    it is loud enough to count ((B, F) bool: peak amplitude above `floor`).

    The pitch the harmonic source learns to play. For Shapes-AV tones the strongest partial is
    the fundamental; for other sounds it may be a harmonic (an octave error the spectral loss
    then has to live with).
    """
    n_fft, frames = 2048, audio.shape[1] // hop
    window = torch.hann_window(n_fft, device=audio.device)
    x = nn.functional.pad(audio.float(), (n_fft // 2 - hop // 2, n_fft // 2))
    spec = torch.stft(x, n_fft, hop, window=window, center=False, return_complex=True).abs()[
        ..., :frames
    ]
    bin_hz = sample_rate / n_fft
    lo, hi = int(F0_RANGE_HZ[0] / bin_hz) + 1, min(int(F0_RANGE_HZ[1] / bin_hz), spec.shape[1] - 2)
    band = spec[:, lo:hi]  # (B, bins, F)
    peak = band.argmax(1)  # (B, F)
    a, b, c = (
        band.gather(1, (peak + d).clamp(0, band.shape[1] - 1)[:, None])[:, 0] for d in (-1, 0, 1)
    )
    shift = (0.5 * (a - c) / (a - 2 * b + c).clamp(max=-1e-9)).clamp(-0.5, 0.5)
    hz = (peak + lo + shift) * bin_hz
    return hz, b > floor * window.sum() / 2


class HarmonicSource(nn.Module):
    """Latents (B, D, F) -> a pitch per frame and `harmonics` amplitudes -> audio (B, F * hop):
    the sum of the harmonics (those under Nyquist) of a sine whose phase runs on from frame to
    frame, so a steady code plays a steady tone of any pitch."""

    def __init__(self, config: AudioTokenizerConfig):
        super().__init__()
        self.hop, self.rate, self.count = config.hop_length, config.sample_rate, config.harmonics
        width = 2 * config.latent_dim
        self.head = nn.Sequential(
            nn.Conv1d(config.latent_dim, width, 3, padding=1),
            nn.ELU(),
            nn.Conv1d(width, 1 + self.count, 3, padding=1),
        )

    def forward(
        self, z: torch.Tensor, pitch: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D, F) -> audio (B, F * hop) and the predicted pitch (B, F) in Hz. `pitch`, where
        given (> 0), is played instead of the prediction (training: the input's own, so the
        amplitudes learn on the right partials while the pitch is still being learnt)."""
        h = self.head(z)
        lo, hi = F0_RANGE_HZ
        f0 = lo * (hi / lo) ** torch.sigmoid(h[:, 0])  # (B, F)
        played = f0 if pitch is None else torch.where(pitch > 0, pitch.to(f0.dtype), f0.detach())
        amps = nn.functional.softplus(h[:, 1:]) * 0.05  # (B, K, F)
        up = lambda t: nn.functional.interpolate(t, scale_factor=self.hop, mode="linear")  # noqa: E731
        f0_s = up(played[:, None])[:, 0]  # (B, N)
        cycles = torch.cumsum(f0_s.double() / self.rate, dim=1)
        phase = (2 * math.pi * (cycles - torch.floor(cycles))).float()
        k = torch.arange(1, self.count + 1, device=z.device, dtype=phase.dtype)[None, :, None]
        audible = (k * f0_s[:, None] < self.rate / 2).to(phase.dtype)
        return (up(amps) * audible * torch.sin(k * phase[:, None])).sum(1), f0


# ---------------------------------------------------------------------------- tokenizer


def flatten_codes(codes: torch.Tensor) -> torch.Tensor:
    """(B, L, F) -> (B, L*F), level by level, coarse to fine: level 0's F codes come first."""
    if codes.ndim != 3:
        raise ValueError(f"codes must be (B, levels, frames); got shape {tuple(codes.shape)}")
    return rearrange(codes, "b l f -> b (l f)")


def unflatten_codes(flat: torch.Tensor, levels: int) -> torch.Tensor:
    """(B, L*F) laid out level by level -> (B, L, F); the inverse of `flatten_codes`."""
    if flat.ndim != 2 or levels < 1 or flat.shape[1] % levels:
        raise ValueError(
            f"flat codes must be (B, levels * frames) with length divisible by levels={levels}; "
            f"got shape {tuple(flat.shape)}"
        )
    return rearrange(flat, "b (l f) -> b l f", l=levels)


class AudioTokenizerOutput(NamedTuple):
    reconstruction: torch.Tensor  # (B, F * hop), not clamped; compare to audio[:, :F * hop]
    aux_loss: torch.Tensor  # scalar: RVQ commitment loss, summed over levels
    codes: torch.Tensor  # (B, L, F) int64
    pitch: torch.Tensor | None = None  # (B, F) Hz the harmonic source predicts; None without one


class AudioTokenizer(nn.Module):
    def __init__(self, config: AudioTokenizerConfig):
        super().__init__()
        self.config = config
        self.encoder = (
            SpectrumEncoder(config) if config.encoder_input == "spectrum" else Encoder(config)
        )
        # ResidualVQ keeps constant buffers outside the state dict; built on the meta device
        # they would stay empty after load_state_dict(..., assign=True), so build it on the
        # CPU then. Its codebooks are buffers (EMA-updated), not parameters.
        on_meta = torch.get_default_device().type == "meta"
        with torch.device("cpu") if on_meta else contextlib.nullcontext():
            self.quantizer = ResidualVQ(
                dim=config.latent_dim,
                num_quantizers=config.num_quantizers,
                codebook_size=config.codebook_size,
                kmeans_init=False,  # random init; EMA updates move the codes during training
                threshold_ema_dead_code=config.dead_code_threshold,
            )
        self.decoder = Decoder(config)
        self.harmonic = HarmonicSource(config) if config.harmonics else None

    flatten_codes = staticmethod(flatten_codes)
    unflatten_codes = staticmethod(unflatten_codes)

    def num_frames(self, num_samples: int) -> int:
        return self.config.num_frames(num_samples)

    def _trim(self, audio: torch.Tensor) -> torch.Tensor:
        hop = self.config.hop_length
        if not isinstance(audio, torch.Tensor) or not audio.is_floating_point() or audio.ndim != 2:
            shape = tuple(audio.shape) if isinstance(audio, torch.Tensor) else type(audio).__name__
            raise ValueError(f"audio must be a float tensor (B, N) in [-1, 1]; got {shape}")
        if audio.shape[1] < hop:
            raise ValueError(
                f"audio (B, N) needs at least one hop of N >= {hop} samples "
                f"({hop / self.config.sample_rate * 1000:g} ms); got N={audio.shape[1]}"
            )
        return audio[:, : self.num_frames(audio.shape[1]) * hop]  # drop the partial last hop

    def _quantize(self, audio: torch.Tensor, freeze_codebook: bool = False):
        z = self.encoder(audio.unsqueeze(1))  # (B, D, F)
        quantized, indices, losses = self.quantizer(
            rearrange(z, "b d f -> b f d"), freeze_codebook=freeze_codebook
        )
        codes = rearrange(indices, "b f l -> b l f").long()
        return rearrange(quantized, "b f d -> b d f"), losses.sum(), codes

    @torch.no_grad()
    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """audio (B, N) float in [-1, 1] -> codes (B, L, N // hop) int64, level 0 coarsest.

        Samples past the last whole hop are dropped. Never updates the codebooks.
        """
        return self._quantize(self._trim(audio), freeze_codebook=True)[2]

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, L, F) int in [0, codebook_size) -> audio (B, F * hop) in [-1, 1]."""
        levels, size = self.config.num_quantizers, self.config.codebook_size
        if not isinstance(codes, torch.Tensor) or codes.is_floating_point() or codes.ndim != 3:
            shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise ValueError(f"codes must be an integer tensor (B, {levels}, F); got {shape}")
        if codes.shape[1] != levels or codes.shape[2] < 1:
            raise ValueError(
                f"codes must be (B, {levels}, F) with {levels} levels and F >= 1; "
                f"got shape {tuple(codes.shape)}"
            )
        if codes.min() < 0 or codes.max() >= size:
            raise ValueError(
                f"codes must lie in [0, {size}); got min {int(codes.min())}, max {int(codes.max())}"
            )
        z = self.quantizer.get_output_from_indices(rearrange(codes, "b l f -> b f l"))  # (B, F, D)
        return self._synthesize(rearrange(z, "b f d -> b d f"))[0].clamp(-1, 1)

    def _synthesize(
        self, z: torch.Tensor, pitch: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Quantized latents (B, D, F) -> audio (B, F * hop), and the harmonics' pitch (B, F)."""
        audio = self.decoder(z).squeeze(1)
        if self.harmonic is None:
            return audio, None
        tone, predicted = self.harmonic(z, pitch)
        return audio + tone, predicted

    def forward(
        self, audio: torch.Tensor, pitch: torch.Tensor | None = None
    ) -> AudioTokenizerOutput:
        """Reconstruct audio (B, N) through the quantizer, for training (trims to whole hops).

        pitch (B, N // hop) Hz, 0 where unknown: what the harmonic source plays instead of its
        own prediction (teacher forcing); the output's `pitch` is still the prediction.
        """
        quantized, aux_loss, codes = self._quantize(self._trim(audio))
        reconstruction, pitch = self._synthesize(quantized, pitch)
        return AudioTokenizerOutput(reconstruction, aux_loss, codes, pitch)
