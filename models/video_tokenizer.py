"""MAGVIT-v2-style causal video tokenizer with lookup-free quantization (LFQ).

Frames in [-1, 1] shaped (B, 3, T, H, W) <-> integer tokens (B, t, h, w) in [0, 2**bits).
Causal in time: every temporal conv looks only at the current and earlier frames, and
normalization runs per frame, so latent frame 0 depends on frame 0 alone and latent frame k
on frames <= 4k (two temporal stages). An image (T = 1) therefore tokenizes exactly like the
first frame of a video. Shapes with the paper settings: 17x128x128 -> (5, 16, 16) = 1,280
tokens; an image 128x128 -> (1, 16, 16) = 256 tokens.

Layout (widths w0 = channels, w_i = channels * channel_mult[i-1]):
  encoder: stem -> res blocks @ w0 -> per stage [down (space 2x, time 2x if flagged) ->
           res blocks @ w_{i+1}] -> norm, SiLU -> 1x1x1 conv to `codebook_bits` -> LFQ
  decoder: 1x1x1 conv from `codebook_bits` -> res blocks -> per stage, reversed [up
           (depth-to-space; time 2x then drop the first frame) -> res blocks] -> norm, SiLU,
           conv to RGB
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field, fields
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from vector_quantize_pytorch import LFQ


@dataclass
class VideoTokenizerConfig:
    channels: int = 128  # width of the full-resolution level
    channel_mult: tuple[int, ...] = (2, 2, 4)  # width after each 2x down stage, x `channels`
    num_res_blocks: int = 4  # per level, at full resolution and after each stage
    # stages that also halve time, causally (T -> (T - 1) // 2 + 1): 17 -> 9 -> 5, 1 -> 1 -> 1
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    codebook_bits: int = 18  # LFQ: one bit per latent channel -> 2**18 = 262,144 codes
    entropy_loss_weight: float = 0.1
    commitment_loss_weight: float = 0.25
    image_size: tuple[int, int] = (64, 64)  # (H, W) of training clips; any multiple of 8 encodes
    frames: int = 17  # training clip length; any 4k+1 encodes
    # decoder widths (None: the encoder's): wider draws sharper edges with the same tokens
    decoder_channels: int | None = None
    decoder_channel_mult: tuple[int, ...] | None = None

    # derived in __post_init__
    codebook_size: int = field(init=False)
    spatial_factor: int = field(init=False)  # 2 ** stages
    temporal_factor: int = field(init=False)  # 2 ** (temporal stages)

    def __post_init__(self):
        # JSON gives lists back; keep tuples so configs compare and hash the same
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        if self.decoder_channel_mult is not None:
            self.decoder_channel_mult = tuple(int(m) for m in self.decoder_channel_mult)
            if len(self.decoder_channel_mult) != len(self.channel_mult):
                raise ValueError(
                    f"decoder_channel_mult needs one entry per stage ({len(self.channel_mult)}, "
                    f"as channel_mult {self.channel_mult}), got {self.decoder_channel_mult}"
                )
        if self.decoder_channels is not None and int(self.decoder_channels) < 1:
            raise ValueError(
                f"decoder_channels must be >= 1 (or null: the encoder's), got {self.decoder_channels}"
            )
        self.temporal_downsample = tuple(bool(d) for d in self.temporal_downsample)
        self.image_size = tuple(int(s) for s in self.image_size)
        if len(self.temporal_downsample) != len(self.channel_mult):
            raise ValueError(
                f"temporal_downsample needs one flag per stage ({len(self.channel_mult)}), "
                f"got {self.temporal_downsample}"
            )
        if self.num_res_blocks < 1 or self.codebook_bits < 1:
            raise ValueError("num_res_blocks and codebook_bits must be >= 1")
        self.codebook_size = 2**self.codebook_bits
        self.spatial_factor = 2 ** len(self.channel_mult)
        self.temporal_factor = 2 ** sum(self.temporal_downsample)

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(t, h, w) of the tokens for a clip of `frames` x `height` x `width`."""
        t = frames
        for down in self.temporal_downsample:
            if down:
                t = (t - 1) // 2 + 1
        return t, height // self.spatial_factor, width // self.spatial_factor

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the constructor fields, for config.json."""
        d = asdict(self)
        return {f.name: d[f.name] for f in fields(self) if f.init}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VideoTokenizerConfig:
        names = {f.name for f in fields(cls) if f.init}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_name(cls, name: str) -> VideoTokenizerConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown video tokenizer preset {name!r}; one of {sorted(PRESETS)}")
        return cls(**PRESETS[name])


PRESETS: dict[str, dict[str, Any]] = {
    # tests: random init, fast on CPU
    "tiny": {"channels": 16, "channel_mult": (1, 2, 2), "num_res_blocks": 1, "codebook_bits": 8},
    # the shipped checkpoint: 64x64 Shapes-AV clips, trained on 2 CPU cores
    "demo": {
        "channels": 9,  # full resolution costs most, and flat colours need little width there
        "channel_mult": (2, 4, 8),
        "num_res_blocks": 1,
        "codebook_bits": 10,  # keeps LFQ's entropy loss and the LM's vocabulary small
        "entropy_loss_weight": 0.01,  # mostly flat background: more spreads it over many codes
        "decoder_channels": 16,  # a wider decoder, trained on the encoder's frozen codes
        "decoder_channel_mult": (2, 4, 6),
    },
    # paper-shaped (MAGVIT-v2's 128 x (1, 2, 2, 4)): its entropy loss needs a GPU to train
    "paper": {
        "channels": 128,
        "channel_mult": (2, 2, 4),
        "num_res_blocks": 4,
        "codebook_bits": 18,
        "image_size": (128, 128),
    },
}


# ---------------------------------------------------------------------------- layers


def norm_groups(channels: int, max_groups: int = 32, min_per_group: int = 4) -> int:
    """The most groups (up to 32) that leave at least 4 channels in each.

    One channel per group would be instance norm: it removes every channel's own mean, so a
    flat colour (a plain background) could not pass through the network.
    """
    limit = max(1, min(max_groups, channels // min_per_group))
    return max(g for g in range(1, limit + 1) if channels % g == 0)


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm over each frame on its own: statistics over time would leak the future."""

    def __init__(self, channels: int):
        super().__init__(norm_groups(channels), channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        x = rearrange(x, "b c t h w -> (b t) c h w")
        x = super().forward(x)
        return rearrange(x, "(b t) c h w -> b c t h w", b=b)


def _onednn_ok(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether this conv can run on oneDNN: a dense float32 CPU tensor, oneDNN built and enabled
    (`torch.backends.mkldnn.flags(enabled=False)` turns it off)."""
    return (
        x.device.type == "cpu"
        and x.layout == torch.strided
        and x.dtype == weight.dtype == torch.float32
        and torch.backends.mkldnn.enabled
        and torch.backends.mkldnn.is_available()
    )


class Conv3d(nn.Conv3d):
    """nn.Conv3d that runs on oneDNN on a CPU at every batch size.

    ATen's heuristic (`ConvParams::use_mkldnn` in ATen/native/Convolution.cpp) sends a float32
    3D conv to oneDNN only when the batch has 2 or more rows, N*C*T*H > 20480, or groups > 1,
    and never a 1x1x1 conv on one thread below 16 rows: a small one-row conv falls to
    `slow_conv3d`, ~3x slower here and rounding differently, so a row decoded alone differed
    from the same row in a batch. This calls `torch.mkldnn_convolution`, the op ATen itself
    calls once it picks oneDNN (same contiguous inputs, same arguments), for every CPU float32
    input; memory format and `torch.backends.mkldnn.flags` cannot force that choice (the flag
    can turn it off). A row's output then does not depend on its batch: measured (pixels and
    tokens bit-identical alone and in batches of 2 to 8: the demo at 1 thread, tiny at 1 and
    2 in the tests; 2 x86-64 cores, PyTorch 2.13 CPU), not promised by oneDNN. CUDA and other dtypes/devices take
    nn.Conv3d's own path (cuDNN on CUDA).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros" or not _onednn_ok(x, self.weight):
            return super().forward(x)
        return torch.mkldnn_convolution(
            x.contiguous(),
            self.weight.contiguous(),
            self.bias,
            self.padding,
            self.stride,
            self.dilation,
            self.groups,
        )


class CausalConv3d(Conv3d):
    """3D conv that sees only the current and earlier frames.

    Time is padded on the left with copies of the first frame (so frame 0 depends on
    itself alone), space is zero-padded to 'same' (halved exactly with stride 2).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride=(1, 1, 1)):
        super().__init__(
            in_ch,
            out_ch,
            kernel_size,
            stride=stride,
            padding=(0, kernel_size // 2, kernel_size // 2),
        )
        self.time_pad = kernel_size - 1

    def forward(self, x: torch.Tensor, state: DecoderState | None = None) -> torch.Tensor:
        """`state`: the clip's frames before x are those `state` has seen (a decode carried
        on, stride 1 only); x's last input frames are kept in it for the next call."""
        if self.time_pad:
            before = None if state is None else state.tail(self)
            if before is None:  # the clip's start: copies of its first frame
                before = x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1)
            x = torch.cat([before, x], dim=2)  # (B, C, T + k - 1, H, W)
            if state is not None:
                if self.stride[0] != 1:
                    raise ValueError("only a stride-1 causal conv carries its state")
                state.keep(self, x[:, :, -self.time_pad :])
        return super().forward(x)


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.norm1 = FrameGroupNorm(in_ch)
        self.conv1 = CausalConv3d(in_ch, out_ch)
        self.norm2 = FrameGroupNorm(out_ch)
        self.conv2 = CausalConv3d(out_ch, out_ch)
        self.skip = Conv3d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, state: DecoderState | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)), state)
        h = self.conv2(F.silu(self.norm2(h)), state)
        return self.skip(x) + h


class Downsample(CausalConv3d):
    """Strided causal conv: (H, W) -> (H/2, W/2); with `temporal`, T -> (T - 1) // 2 + 1.

    With 2 padded frames and stride 2, output frame j covers input frames 2j-2 .. 2j.
    """

    def __init__(self, ch: int, temporal: bool):
        super().__init__(ch, ch, 3, stride=(2 if temporal else 1, 2, 2))


class Upsample(nn.Module):
    """Depth-to-space: (H, W) -> (2H, 2W); with `temporal`, T -> 2T - 1.

    Time doubles, then the first output frame is dropped: latent frame 0 decodes to one
    frame (an image stays an image), every later latent frame to two.
    """

    def __init__(self, ch: int, temporal: bool):
        super().__init__()
        self.pt = 2 if temporal else 1
        self.conv = CausalConv3d(ch, ch * self.pt * 4)

    def forward(self, x: torch.Tensor, state: DecoderState | None = None) -> torch.Tensor:
        x = rearrange(
            self.conv(x, state),
            "b (c pt ph pw) t h w -> b c (t pt) (h ph) (w pw)",
            pt=self.pt,
            ph=2,
            pw=2,
        )
        starts = state is None or state.latent_frames == 0  # the clip's first frame is alone
        return x[:, :, 1:] if self.pt == 2 and starts else x


def _widths(config: VideoTokenizerConfig, decoder: bool = False) -> list[int]:
    ch, mult = config.channels, config.channel_mult
    if decoder:
        ch = config.decoder_channels or ch
        mult = config.decoder_channel_mult or mult
    return [ch] + [ch * m for m in mult]


class Encoder(nn.Module):
    def __init__(self, config: VideoTokenizerConfig):
        super().__init__()
        w, n = _widths(config), config.num_res_blocks
        self.stem = CausalConv3d(3, w[0])
        blocks: list[nn.Module] = [ResBlock(w[0], w[0]) for _ in range(n)]
        for i, temporal in enumerate(config.temporal_downsample):
            blocks.append(Downsample(w[i], temporal))
            blocks += [ResBlock(w[i] if j == 0 else w[i + 1], w[i + 1]) for j in range(n)]
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = FrameGroupNorm(w[-1])
        self.proj = Conv3d(w[-1], config.codebook_bits, 1)  # features -> LFQ bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))  # (B, w[-1], t, h, w)
        return self.proj(F.silu(self.norm_out(x)))  # (B, bits, t, h, w)


class Decoder(nn.Module):
    def __init__(self, config: VideoTokenizerConfig):
        super().__init__()
        w, n = _widths(config, decoder=True), config.num_res_blocks
        self.proj = Conv3d(config.codebook_bits, w[-1], 1)  # LFQ bits -> features
        blocks: list[nn.Module] = [ResBlock(w[-1], w[-1]) for _ in range(n)]
        for i in reversed(range(len(config.channel_mult))):
            blocks.append(Upsample(w[i + 1], config.temporal_downsample[i]))
            blocks += [ResBlock(w[i + 1] if j == 0 else w[i], w[i]) for j in range(n)]
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = FrameGroupNorm(w[0])
        self.conv_out = CausalConv3d(w[0], 3)

    def forward(self, z: torch.Tensor, state: DecoderState | None = None) -> torch.Tensor:
        """`state`: decode z's latent frames after those `state` has seen (`DecoderState.run`)."""
        x = self.proj(z)
        if state is None:
            x = self.blocks(x)  # (B, w[0], T, H, W)
        else:
            for block in self.blocks:
                x = block(x, state)
        return self.conv_out(F.silu(self.norm_out(x)), state)  # (B, 3, T, H, W)


class DecoderState:
    """The causal decoder's state carried from one call to the next, for one clip.

    Every time-mixing layer of the decoder is causal (a 3-tap causal conv, a depth-to-space
    upsampler after one), so the frames of latent frames k.. depend on the earlier ones only
    through the last two input frames of each causal conv. `VideoTokenizer.decode_more` keeps
    those and decodes only the latent frames it is given: feeding a clip's latent frames in
    any split gives the frames of one `decode` of the whole clip (the same pixels within a
    level, checked by the tests) at the cost of the new frames alone. One state per clip; not
    shared between threads.
    """

    def __init__(self) -> None:
        self.tails: dict[nn.Module, torch.Tensor] = {}  # causal conv -> its last input frames
        self.latent_frames = 0  # latent frames decoded so far
        self._next: dict[nn.Module, torch.Tensor] = {}  # the tails of the call under way

    def tail(self, conv: nn.Module) -> torch.Tensor | None:
        return self.tails.get(conv)

    def keep(self, conv: nn.Module, frames: torch.Tensor) -> None:
        self._next[conv] = frames

    def run(self, decoder: Decoder, z: torch.Tensor) -> torch.Tensor:
        """Decode the latent frames z (B, bits, n, h, w) after those seen. The state moves on
        only when the call succeeds: one that raises leaves it as it was."""
        self._next = {}
        try:
            x = decoder(z, self)
        finally:
            next_tails, self._next = self._next, {}
        self.tails.update(next_tails)
        self.latent_frames += z.shape[2]
        return x


# ---------------------------------------------------------------------------- tokenizer


class VideoTokenizerOutput(NamedTuple):
    reconstruction: torch.Tensor  # (B, 3, T, H, W), not clamped, for the loss
    aux_loss: torch.Tensor  # scalar: LFQ entropy + commitment loss (0 in eval mode)
    tokens: torch.Tensor  # (B, t, h, w) int64


class VideoTokenizer(nn.Module):
    def __init__(self, config: VideoTokenizerConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        # LFQ keeps constant buffers outside the state dict (its codebook); built on the meta
        # device they would stay empty after load_state_dict(..., assign=True), so build it
        # on the CPU then. It has no parameters.
        on_meta = torch.get_default_device().type == "meta"
        with torch.device("cpu") if on_meta else contextlib.nullcontext():
            self.quantizer = LFQ(
                dim=config.codebook_bits,  # encoder already projects to bits: no LFQ projections
                codebook_size=config.codebook_size,
                entropy_loss_weight=config.entropy_loss_weight,
                commitment_loss_weight=config.commitment_loss_weight,
                channel_first=False,  # we hand it (B, N, bits)
            )
        self.decoder = Decoder(config)

    def _check_frames(self, frames: torch.Tensor) -> None:
        tf, sf = self.config.temporal_factor, self.config.spatial_factor
        expected = (
            f"(B, 3, T, H, W) float in [-1, 1] with T = {tf}k+1 (1, {tf + 1}, {2 * tf + 1}, ...) "
            f"and H, W multiples of {sf}"
        )
        if not isinstance(frames, torch.Tensor) or not frames.is_floating_point():
            raise ValueError(f"frames must be a float tensor {expected}")
        if frames.ndim != 5:
            raise ValueError(f"frames must be 5-D {expected}; got shape {tuple(frames.shape)}")
        _, c, t, h, w = frames.shape
        if c != 3:
            raise ValueError(
                f"frames must have 3 channels: {expected}; got shape {tuple(frames.shape)}"
            )
        if t < 1 or (t - 1) % tf:
            raise ValueError(f"frames must number T = {tf}k+1: {expected}; got T={t}")
        if h < sf or w < sf or h % sf or w % sf:
            raise ValueError(
                f"frame height and width must each be a multiple of {sf}: {expected}; "
                f"got H={h}, W={w}"
            )

    def token_mask(self, pixel_mask: torch.Tensor) -> torch.Tensor:
        """(B, 1, T, H, W) pixel mask -> (B, t*h*w) bool: the tokens whose patch holds a set pixel.

        Causal grouping: latent frame 0 covers frame 0 alone, latent frame k frames 4k-3..4k
        (two temporal stages); spatially each token covers its 8x8 block (three stages).
        """
        tf, sf = self.config.temporal_factor, self.config.spatial_factor
        m = pixel_mask.float()
        if tf > 1:  # frame 0 repeated in front makes the first group frame 0 alone
            m = torch.cat([m[:, :, :1].expand(-1, -1, tf - 1, -1, -1), m], dim=2)
        m = F.max_pool3d(m, kernel_size=(tf, sf, sf))
        return rearrange(m > 0, "b 1 t h w -> b (t h w)")

    def _quantize(self, frames: torch.Tensor, token_mask: torch.Tensor | None = None):
        z = self.encoder(frames)  # (B, bits, t, h, w)
        _, _, t, h, w = z.shape
        flat = rearrange(z, "b d t h w -> b (t h w) d")
        if token_mask is None or not self.training or not bool(token_mask.any()):
            quantized, indices, aux_loss = self.quantizer(flat)
        else:
            # LFQ's entropy terms (confident codes, a diverse codebook) over the masked tokens
            # only, its commitment term over all. Not LFQ's own `mask=`: in
            # vector-quantize-pytorch 1.32 that path averages no probabilities, so its "batch"
            # entropy equals the per-sample one and the two terms cancel.
            q = self.quantizer
            (quantized, indices, _), parts = q(flat, return_loss_breakdown=True)
            _, chosen = q(flat[token_mask][None], return_loss_breakdown=True)
            entropy = chosen.per_sample_entropy - q.diversity_gamma * chosen.batch_entropy
            aux_loss = q.entropy_loss_weight * entropy + q.commitment_loss_weight * parts.commitment
        quantized = rearrange(quantized, "b (t h w) d -> b d t h w", t=t, h=h, w=w)
        tokens = rearrange(indices, "b (t h w) -> b t h w", t=t, h=h, w=w).long()
        return quantized, aux_loss, tokens

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B, 3, T, H, W) float in [-1, 1] -> tokens (B, t, h, w) int64 in [0, 2**bits).

        T = 4k+1 and H, W multiples of 8 with the default stages; see `config.latent_shape`.
        """
        self._check_frames(frames)
        return self._quantize(frames)[2]

    @torch.no_grad()
    def codes(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B, 3, T, H, W) -> what the decoder reads: (B, bits, t, h, w), entries +-1."""
        self._check_frames(frames)
        return self._quantize(frames)[0]

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, t, h, w) int in [0, 2**bits) -> frames (B, 3, T, H, W) in [-1, 1].

        T = (t - 1) * 4 + 1, H = 8h, W = 8w with the default stages.
        """
        return self.decoder(self.tokens_to_codes(tokens)).clamp(-1, 1)

    @torch.no_grad()
    def decode_more(self, tokens: torch.Tensor, state: DecoderState) -> torch.Tensor:
        """The next latent frames of a clip, tokens (B, n, h, w), decoded after those `state`
        has seen -> their frames (B, 3, T_new, H, W) in [-1, 1]: 1 + 4(n - 1) for the clip's
        first call, 4n after. The frames of all calls, in order, are `decode` of the whole."""
        return state.run(self.decoder, self.tokens_to_codes(tokens)).clamp(-1, 1)

    @torch.no_grad()
    def tokens_to_codes(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, t, h, w) int in [0, 2**bits) -> what the decoder reads: (B, bits, t, h, w),
        entries +-1 (as `codes` gives from frames)."""
        size = self.config.codebook_size
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 4 or tokens.is_floating_point():
            shape = (
                tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            )
            raise ValueError(f"tokens must be an integer tensor (B, t, h, w); got {shape}")
        if tokens.numel() == 0:
            raise ValueError(
                f"tokens (B, t, h, w) must not be empty; got shape {tuple(tokens.shape)}"
            )
        if tokens.min() < 0 or tokens.max() >= size:
            raise ValueError(
                f"tokens must lie in [0, {size}); "
                f"got min {int(tokens.min())}, max {int(tokens.max())}"
            )
        _, t, h, w = tokens.shape
        flat = rearrange(tokens, "b t h w -> b (t h w)")
        codes = self.quantizer.indices_to_codes(flat)  # (B, t*h*w, bits), entries +-1
        return rearrange(codes, "b (t h w) d -> b d t h w", t=t, h=h, w=w)

    def forward(
        self, frames: torch.Tensor, token_mask: torch.Tensor | None = None
    ) -> VideoTokenizerOutput:
        """Reconstruct frames (B, 3, T, H, W) through the quantizer, for training.

        `token_mask` (B, t*h*w) bool, see `token_mask()`: LFQ's entropy loss (confident codes,
        a diverse codebook) is computed over these tokens only; None: over all of them.
        """
        self._check_frames(frames)
        quantized, aux_loss, tokens = self._quantize(frames, token_mask)
        return VideoTokenizerOutput(self.decoder(quantized), aux_loss, tokens)

    @staticmethod
    def frames_to_tensor(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 frames (B, T, H, W, 3) or (T, H, W, 3) -> float32 (B, 3, T, H, W) in [-1, 1]."""
        x = torch.as_tensor(np.asarray(frames) if not isinstance(frames, torch.Tensor) else frames)
        if x.ndim == 4:
            x = x.unsqueeze(0)
        if x.dtype != torch.uint8 or x.ndim != 5 or x.shape[-1] != 3:
            raise ValueError(
                "frames must be uint8 (B, T, H, W, 3) or (T, H, W, 3); "
                f"got {x.dtype} {tuple(x.shape)}"
            )
        return rearrange(x.float() / 127.5 - 1.0, "b t h w c -> b c t h w")

    @staticmethod
    def tensor_to_frames(x: torch.Tensor) -> np.ndarray:
        """float (B, 3, T, H, W) in [-1, 1] -> uint8 numpy (B, T, H, W, 3)."""
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"expected a float tensor (B, 3, T, H, W); got shape {tuple(x.shape)}")
        x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return rearrange(x, "b c t h w -> b t h w c").cpu().numpy()
