"""The LM's vocabulary and the sequence layout of every task (paper, Table 4).

Vocabulary: 256 special codes, then the visual codes (MAGVIT-v2 LFQ indices), then the audio
codes, one range of `audio_codes` per residual-VQ level (so a level-2 code and a level-0 code
of the same index are different tokens). Paper: 256 + 262,144 + 4 x 1,024.

Layout: `<bos> <task> <bot_i> text <eot_i> <bov_i> visual-in <eov_i> <boa_i> audio-in <eoa_i>
<bov_o> visual-out <eov_o> <boa_o> audio-out <eoa_o> <eos>`; an absent segment is left out
with its markers. The prefix is everything up to and including the first output marker: it is
attended bidirectionally, the rest causally, and the loss falls on the rest only.

Text is a fixed-length slot of `text_tokens` positions whose inputs are the projected text
encoder states (the ids there are `<pad>`); padding inside it is masked out of attention.
A fixed slot gives every sequence of a task one length, which batching and the static KV cache
rely on. The task token names the task (one per task; each task has one output type).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import torch

from models.spec import Task

NUM_SPECIAL = 256  # paper: 256 special/task codes ahead of the visual codes

_MARKERS = [
    "pad",
    "bos",
    "eos",
    "bot_i",
    "eot_i",
    "bov_i",
    "eov_i",
    "boa_i",
    "eoa_i",
    "source",
    "res",  # kept from Table 4 for super-resolution; unused until that stage
    "bov_o",
    "eov_o",
    "boa_o",
    "eoa_o",
    "mask",  # a masked visual-in position (inpaint / outpaint)
]
SPECIAL: dict[str, int] = {name: i for i, name in enumerate(_MARKERS)}
TASK_TOKEN_BASE = 32  # task tokens start here, one per Task, in declaration order
TASK_TOKEN: dict[Task, int] = {task: TASK_TOKEN_BASE + i for i, task in enumerate(Task)}
assert TASK_TOKEN_BASE + len(Task) <= NUM_SPECIAL


class Kind(IntEnum):
    """What a position holds, which decides the codes it may sample."""

    special = 0
    text = 1
    visual = 2
    audio = 3  # level l is Kind.audio + l


@dataclass(frozen=True)
class Vocab:
    visual_codes: int  # 2**codebook_bits of the video tokenizer
    audio_codes: int  # codes per residual-VQ level
    audio_levels: int

    @property
    def visual_offset(self) -> int:
        return NUM_SPECIAL

    @property
    def audio_offset(self) -> int:
        return NUM_SPECIAL + self.visual_codes

    @property
    def size(self) -> int:
        return self.audio_offset + self.audio_levels * self.audio_codes

    def code_range(self, kind: int) -> tuple[int, int]:
        """[lo, hi) of the ids a position of this kind may take."""
        if kind == Kind.visual:
            return self.visual_offset, self.audio_offset
        if kind >= Kind.audio:
            lo = self.audio_offset + (kind - Kind.audio) * self.audio_codes
            return lo, lo + self.audio_codes
        return 0, NUM_SPECIAL

    def describe(self) -> dict[str, int]:
        return {
            "special": NUM_SPECIAL,
            "visual": self.visual_codes,
            "audio": self.audio_levels * self.audio_codes,
            "audio_levels": self.audio_levels,
            "audio_codes_per_level": self.audio_codes,
            "total": self.size,
        }


@dataclass(frozen=True)
class Shapes:
    """Token counts of each segment of a task, decided by the task and the model card."""

    text: int = 0
    visual_in: int = 0
    audio_in: tuple[int, int] = (0, 0)  # (levels, frames)
    visual_out: int = 0
    audio_out: tuple[int, int] = (0, 0)
    grid_hw: tuple[int, int] = (0, 0)  # (rows, cols) of a latent frame's tokens; (0, 0): unknown


@dataclass
class Layout:
    """Where each segment sits in a task's sequence. Same for every row of a task."""

    task: Task
    shapes: Shapes
    kinds: list[int] = field(default_factory=list)  # Kind per position
    structure: list[int] = field(default_factory=list)  # fixed id per position, -1 = content
    segments: dict[str, slice] = field(default_factory=dict)
    prefix_len: int = 0
    # (latent frame, row, column) of each visual position within its segment, in raster order;
    # (-1, -1, -1) elsewhere and everywhere when the shapes give no grid_hw
    grid: list[tuple[int, int, int]] = field(default_factory=list)

    @property
    def length(self) -> int:
        return len(self.kinds)

    def grid_coords(self) -> torch.Tensor:
        """(S, 3) int64: `grid` as a tensor, for `PrefixLM.forward`'s `grid`."""
        return torch.tensor(self.grid, dtype=torch.long).reshape(-1, 3)

    @property
    def text_slice(self) -> slice | None:
        return self.segments.get("text")


def build_layout(task: Task, shapes: Shapes) -> Layout:
    layout = Layout(task=task, shapes=shapes)
    rows, cols = shapes.grid_hw

    def add(name: str | None, n: int, kind: int, fixed: int = -1) -> None:
        start = len(layout.kinds)
        layout.kinds.extend([kind] * n)
        layout.structure.extend([fixed] * n)
        if kind == Kind.visual and rows * cols:
            layout.grid.extend((j // (rows * cols), j // cols % rows, j % cols) for j in range(n))
        else:
            layout.grid.extend([(-1, -1, -1)] * n)
        if name:
            layout.segments[name] = slice(start, start + n)

    def marker(name: str) -> None:
        add(None, 1, Kind.special, SPECIAL[name])

    def audio(name: str, levels_frames: tuple[int, int]) -> None:
        levels, frames = levels_frames
        start = len(layout.kinds)
        for level in range(levels):  # level by level, coarse to fine
            add(None, frames, Kind.audio + level)
        layout.segments[name] = slice(start, len(layout.kinds))

    marker("bos")
    add(None, 1, Kind.special, TASK_TOKEN[task])
    if shapes.text:
        marker("bot_i")
        add("text", shapes.text, Kind.text, SPECIAL["pad"])
        marker("eot_i")
    if shapes.visual_in:
        marker("bov_i")
        add("visual_in", shapes.visual_in, Kind.visual)
        marker("eov_i")
    if shapes.audio_in[0]:
        marker("boa_i")
        audio("audio_in", shapes.audio_in)
        marker("eoa_i")
    if shapes.visual_out:
        marker("bov_o")
        layout.prefix_len = len(layout.kinds)
        add("visual_out", shapes.visual_out, Kind.visual)
        marker("eov_o")
    if shapes.audio_out[0]:
        marker("boa_o")
        if not layout.prefix_len:
            layout.prefix_len = len(layout.kinds)
        audio("audio_out", shapes.audio_out)
        marker("eoa_o")
    marker("eos")
    assert layout.prefix_len, f"{task.value} has no output segment"
    return layout


@dataclass
class Batch:
    """Sequences of one layout, ready for the LM."""

    layout: Layout
    ids: torch.Tensor  # (B, S) int64; <pad> at text positions
    key_valid: torch.Tensor  # (B, S) bool; False for text padding
    text: torch.Tensor | None  # (B, L, text_dim) encoder states, or None
    forced: torch.Tensor  # (B, S - prefix_len) int64: the id an output position must take, -1 free


def assemble(
    layout: Layout,
    vocab: Vocab,
    *,
    text: torch.Tensor | None = None,  # (B, L, D)
    text_mask: torch.Tensor | None = None,  # (B, L) bool
    visual_in: torch.Tensor | None = None,  # (B, n) visual codes, -1 = masked
    audio_in: torch.Tensor | None = None,  # (B, levels, frames) codes
    visual_out: torch.Tensor | None = None,  # (B, n) codes (training) or None
    audio_out: torch.Tensor | None = None,  # (B, levels, frames) codes (training) or None
    visual_out_known: torch.Tensor | None = None,  # (B, n) codes to keep, -1 = generate
    batch_size: int | None = None,
) -> Batch:
    """Fill a layout with token content: one call per batch of rows of the same task."""
    B = batch_size or next(
        t.shape[0] for t in (text, visual_in, audio_in, visual_out, audio_out) if t is not None
    )
    structure = torch.tensor(layout.structure, dtype=torch.long)
    ids = structure.expand(B, -1).clone()
    key_valid = torch.ones(B, layout.length, dtype=torch.bool)

    def put(name: str, tokens: torch.Tensor | None, required: bool) -> None:
        seg = layout.segments.get(name)
        if seg is None:
            if tokens is not None:
                raise ValueError(f"task {layout.task.value} takes no {name} tokens")
            return
        if tokens is None:
            if required:
                raise ValueError(f"task {layout.task.value} needs {name} tokens")
            return
        n = seg.stop - seg.start
        if tokens.shape[0] != B or tokens[0].numel() != n:
            raise ValueError(
                f"{name}: expected {B} rows of {n} tokens, got shape {tuple(tokens.shape)}"
            )
        ids[:, seg] = tokens.reshape(B, n)

    if visual_in is not None:
        visual_in = torch.where(visual_in < 0, SPECIAL["mask"] - vocab.visual_offset, visual_in)
        visual_in = visual_in + vocab.visual_offset
    put("visual_in", visual_in, required=True)
    put("audio_in", _audio_ids(audio_in, vocab), required=True)
    put("visual_out", None if visual_out is None else visual_out + vocab.visual_offset, False)
    put("audio_out", _audio_ids(audio_out, vocab), required=False)

    seg = layout.text_slice
    if seg is not None:
        if text is None or text_mask is None:
            raise ValueError(f"task {layout.task.value} needs text states and their mask")
        key_valid[:, seg] = text_mask.cpu()
    elif text is not None:
        raise ValueError(f"task {layout.task.value} takes no text")

    P = layout.prefix_len
    forced = torch.where(structure[P:] >= 0, structure[P:], -1).expand(B, -1).clone()
    if visual_out_known is not None:
        seg = layout.segments["visual_out"]
        known = visual_out_known.reshape(B, -1)
        forced[:, seg.start - P : seg.stop - P] = torch.where(
            known >= 0, known + vocab.visual_offset, -1
        )
    return Batch(layout=layout, ids=ids, key_valid=key_valid, text=text, forced=forced)


def _audio_ids(codes: torch.Tensor | None, vocab: Vocab) -> torch.Tensor | None:
    if codes is None:
        return None
    levels = codes.shape[1]
    if levels > vocab.audio_levels:
        raise ValueError(
            f"audio codes have {levels} levels; the vocabulary has {vocab.audio_levels}"
        )
    level_offset = torch.arange(levels, device=codes.device)[None, :, None] * vocab.audio_codes
    return (codes + vocab.audio_offset + level_offset).flatten(1)  # (B, levels * frames)


def split_output(layout: Layout, vocab: Vocab, out: torch.Tensor) -> dict[str, torch.Tensor]:
    """Generated ids (B, S - prefix_len) -> {'visual_out': codes (B, n), 'audio_out': (B, L, F)}."""
    P = layout.prefix_len
    result = {}
    if "visual_out" in layout.segments:
        seg = layout.segments["visual_out"]
        result["visual_out"] = out[:, seg.start - P : seg.stop - P] - vocab.visual_offset
    if "audio_out" in layout.segments:
        seg = layout.segments["audio_out"]
        levels, frames = layout.shapes.audio_out
        codes = out[:, seg.start - P : seg.stop - P].reshape(-1, levels, frames)
        level_offset = torch.arange(levels, device=out.device)[None, :, None] * vocab.audio_codes
        result["audio_out"] = codes - vocab.audio_offset - level_offset
    return result
