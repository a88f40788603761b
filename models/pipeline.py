"""The pipeline: task spec + decoded inputs -> frames, audio, token counts and timings.

`load_pipeline(name_or_path)` builds a preset from a fixed seed (`tiny`, or any preset with no
shipped weights) or loads a checkpoint folder: `config.json` (a plain dict) beside one
`.safetensors` per component. `Pipeline.generate` takes one spec or a batch; rows of the same
task and length are sampled together. `Pipeline.generate_batch` is the same batch with each row
on its own: per-row progress, per-row cancel, and a row that cannot run fails alone.

Per task (token shapes from the model card; t = latent frames):
- unconditional / text_to_video: sample a clip (t=5); text_to_image: one latent frame.
- image_to_video: the image's tokens are latent frame 0; sample frames 1..4.
- continuation: condition on the last `context_frames` (9 = 1 s + the causal first frame,
  t=3), sample t=2 more, decode all 5, keep the 8 new frames. Long video: repeat on the new
  last second until `seconds` are reached. The other video tasks with `seconds` past one clip
  continue their first clip the same way.
- inpaint / outpaint: the clip's tokens with the box's latent cells replaced by <mask> as the
  condition; the output is the whole clip with the known cells forced (COMMIT-style).
- stylize: the control video (optical flow + depth-like map, models/conditioning.py) tokenized
  by the video tokenizer, plus the prompt.
- audio_to_video, video_to_audio: one clip of the other modality as the condition.
- av_continuation: last second of video and audio in, the next second of both out.
- `with_audio`: video_to_audio on every clip-long window of the finished video.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast, overload

import numpy as np
import torch

from models.audio_tokenizer import AudioTokenizer, AudioTokenizerConfig
from models.card import BUILTIN_CARDS, ModelCard, resolve_checkpoint
from models.conditioning import (
    fit_length,
    fit_samples,
    latent_box_mask,
    resample_audio,
    resample_frames,
    resize_frames,
    stylize_control,
)
from models.generate import (
    SamplingParams,
    compile_decode_step,
    generate_tokens,
)
from models.lm import LM_PRESETS, LMConfig, PrefixLM, rope_tables
from models.quantize import quantize_lm
from models.super_resolution import SRConfig, SuperResolution
from models.super_resolution import sample as sample_sr
from models.spec import (
    GenerationCancelled,
    GenerationInputs,
    GenerationResult,
    Task,
    TaskSpec,
    TaskSpecError,
    output_frames,
    random_seed,
)
from models.text_encoder import MAX_TEXT_TOKENS, BertConfig, MiniLMEncoder, load_text_encoder
from models.video_tokenizer import DecoderState, VideoTokenizer, VideoTokenizerConfig
from models.vocab import Layout, Shapes, Vocab, assemble, build_layout, split_output

__all__ = [
    "GenerationCancelled",
    "GenerationInputs",
    "GenerationResult",
    "ModelConfig",
    "Pipeline",
    "describe",
    "load_pipeline",
]

log = logging.getLogger(__name__)

PRESET_SEED = 0  # presets without shipped weights are built from this seed: same weights everywhere
COMPONENTS = ("video_tokenizer", "audio_tokenizer", "lm")  # one .safetensors each
SR_COMPONENT = "super_resolution"  # a fourth, in a checkpoint with config.sr
# a fifth, in a checkpoint with config.sr_video: the SR stage's own video tokenizer
SR_TOKENIZER = "sr_video_tokenizer"

# model name -> (video tokenizer preset, audio tokenizer preset, LM preset); the card is
# models.card.BUILTIN_CARDS[name]
MODEL_PRESETS: dict[str, tuple[str, str, str]] = {
    "tiny": ("tiny", "tiny", "tiny"),
    "demo": ("demo", "demo", "demo"),
    "videopoet-1b": ("paper", "paper", "videopoet-1b"),
    "videopoet-8b": ("paper", "paper", "videopoet-8b"),
}


def _lm_fields(lm: LMConfig) -> dict:
    """An LMConfig's fields as given to its constructor (without the derived ffn_hidden)."""
    fields = dict(vars(lm))
    fields.pop("ffn_hidden")
    return fields


@dataclass
class ModelConfig:
    name: str
    card: ModelCard
    video: VideoTokenizerConfig
    audio: AudioTokenizerConfig
    lm: LMConfig
    text_encoder: str = "minilm"  # or "t5" with text_encoder_path
    text_encoder_path: str | None = None
    text_tokens: int = MAX_TEXT_TOKENS
    # the super-resolution stage (models/super_resolution.py); None: the LM's size only
    sr: SRConfig | None = None
    # the video tokenizer of the stage's larger size (same codebook: a tokenizer fine-tuned at
    # that size, encoder and decoder, which would change the LM's codes if shared); None: the
    # stage reads and writes the LM's video tokenizer's codes at that size
    sr_video: VideoTokenizerConfig | None = None

    @classmethod
    def from_name(cls, name: str) -> ModelConfig:
        if name not in MODEL_PRESETS:
            raise ValueError(
                f"unknown model {name!r}: give a preset ({', '.join(MODEL_PRESETS)}) or a "
                "checkpoint folder holding config.json"
            )
        video, audio, lm = MODEL_PRESETS[name]
        config = cls(
            name=name,
            card=BUILTIN_CARDS[name],
            video=VideoTokenizerConfig.from_name(video),
            audio=AudioTokenizerConfig.from_name(audio),
            lm=LMConfig(**LM_PRESETS[lm]),
        )
        return config.with_derived_lm()

    @property
    def vocab(self) -> Vocab:
        return Vocab(
            visual_codes=self.video.codebook_size,
            audio_codes=self.audio.codebook_size,
            audio_levels=self.audio.num_quantizers,
        )

    def with_derived_lm(self) -> ModelConfig:
        """Set the LM's vocabulary and context (and grid) from the tokenizers and the card."""
        lm = _lm_fields(self.lm)
        lm["vocab_size"] = self.vocab.size
        longest = max(layout.length for layout in TaskShapes(self).layouts().values())
        lm["max_seq_len"] = -(-longest // 64) * 64
        if lm["grid_positions"]:
            lm["grid_size"] = self.visual_grid()
        self.lm = LMConfig(**lm)
        return self

    def visual_grid(self) -> tuple[int, int, int]:
        """(latent frames, rows, cols) of a clip's visual tokens: the LM's grid_size."""
        shapes = TaskShapes(self)
        return (shapes.t_clip, *shapes.latent_hw)

    def to_dict(self) -> dict:
        lm = _lm_fields(self.lm)
        return {
            "name": self.name,
            "card": self.card.to_dict(),
            "video_tokenizer": self.video.to_dict(),
            "audio_tokenizer": self.audio.to_dict(),
            "lm": lm,
            "text_encoder": self.text_encoder,
            "text_encoder_path": self.text_encoder_path,
            "text_tokens": self.text_tokens,
            **({"super_resolution": self.sr.to_dict()} if self.sr is not None else {}),
            **({SR_TOKENIZER: self.sr_video.to_dict()} if self.sr_video is not None else {}),
        }

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        config = cls(
            name=d["name"],
            card=ModelCard(**d["card"]),
            video=VideoTokenizerConfig.from_dict(d["video_tokenizer"]),
            audio=AudioTokenizerConfig.from_dict(d["audio_tokenizer"]),
            lm=LMConfig(**d["lm"]),
            text_encoder=d.get("text_encoder", "minilm"),
            text_encoder_path=d.get("text_encoder_path"),
            text_tokens=d.get("text_tokens", MAX_TEXT_TOKENS),
            sr=SRConfig(**d["super_resolution"]) if d.get("super_resolution") else None,
            sr_video=(
                VideoTokenizerConfig.from_dict(d[SR_TOKENIZER]) if d.get(SR_TOKENIZER) else None
            ),
        )
        if config.sr_video is not None:
            if config.sr is None:
                raise ValueError(f"config.json has {SR_TOKENIZER} but no super_resolution stage")
            if config.sr_video.codebook_bits != config.video.codebook_bits:
                raise ValueError(
                    f"{SR_TOKENIZER} has {config.sr_video.codebook_bits} code bits and the video "
                    f"tokenizer {config.video.codebook_bits}: the SR stage needs one codebook"
                )
        if config.lm.grid_positions and min(config.lm.grid_size) <= 0:  # switched on by hand
            config.lm = LMConfig(**{**_lm_fields(config.lm), "grid_size": config.visual_grid()})
        return config


class TaskShapes:
    """Token counts of every segment of every task for one model."""

    def __init__(self, config: ModelConfig):
        card = config.card
        self.config = config
        self.card = card
        video = config.video
        self.latent_hw = video.latent_shape(1, card.height, card.width)[1:]
        h, w = self.latent_hw
        self.t_clip = video.latent_shape(card.clip_frames, card.height, card.width)[0]
        self.t_context = video.latent_shape(card.context_frames, card.height, card.width)[0]
        self.per_frame = h * w
        audio = config.audio
        self.levels = audio.num_quantizers
        self.clip_samples = round(card.clip_seconds * audio.sample_rate)
        self.context_samples = round(card.context_frames / card.fps * audio.sample_rate)
        self.step_samples = round(card.step_frames / card.fps * audio.sample_rate)
        self.f_clip = audio.num_frames(self.clip_samples)
        self.f_context = audio.num_frames(self.context_samples)
        self.f_step = audio.num_frames(self.step_samples)

    def shapes(self, task: Task) -> Shapes:
        n = self.per_frame
        clip, ctx = self.t_clip * n, self.t_context * n
        L = self.levels
        text = self.config.text_tokens if task is not Task.unconditional else 0
        table = {
            Task.unconditional: Shapes(visual_out=clip),
            Task.text_to_video: Shapes(text=text, visual_out=clip),
            Task.text_to_image: Shapes(text=text, visual_out=n),
            Task.image_to_video: Shapes(text=text, visual_in=n, visual_out=clip - n),
            Task.continuation: Shapes(text=text, visual_in=ctx, visual_out=clip - ctx),
            Task.inpaint: Shapes(text=text, visual_in=clip, visual_out=clip),
            Task.outpaint: Shapes(text=text, visual_in=clip, visual_out=clip),
            Task.stylize: Shapes(text=text, visual_in=clip, visual_out=clip),
            Task.audio_to_video: Shapes(text=text, audio_in=(L, self.f_clip), visual_out=clip),
            Task.video_to_audio: Shapes(text=text, visual_in=clip, audio_out=(L, self.f_clip)),
            Task.av_continuation: Shapes(
                text=text,
                visual_in=ctx,
                audio_in=(L, self.f_context),
                visual_out=clip - ctx,
                audio_out=(L, self.f_step),
            ),
        }
        return replace(table[task], grid_hw=self.latent_hw)

    def layouts(self) -> dict[Task, Layout]:
        return {task: build_layout(task, self.shapes(task)) for task in Task}


@dataclass
class _Row:
    """One request on its way through the pipeline."""

    spec: TaskSpec
    inputs: GenerationInputs
    seed: int
    new_frames: int  # frames to generate (continuation: beyond the input)
    index: int = 0  # position in the caller's batch
    frames: np.ndarray | None = None  # the video so far, (T, H, W, 3) at the card's size
    # a one-clip output bound for the SR stage: its visual codes (t, h, w), which the stage
    # reads as they are (no decode at the card's size)
    codes: torch.Tensor | None = None
    # a multi-pass video's decoder state after its latest pass: the next pass decodes its new
    # latent frames only, where it would decode its context frames again
    decoder: DecoderState | None = None
    # an image or video input at the SR stage's size (an upscaled image_to_video, inpaint or
    # outpaint whose input is at least that size): the stage keeps its tokens at that size
    hires: np.ndarray | None = None
    audio: np.ndarray | None = None
    prefix_tokens: int = 0
    generated_tokens: int = 0


class _Clock:
    """Stage timings, each row's progress over its planned sampling steps, time to first token.

    `progress(fraction, stage)` hears the whole call's progress; `row_progress(row, fraction,
    stage)` each row's own.
    """

    def __init__(
        self,
        planned: dict[int, int],
        progress: Callable[[float, str], None] | None = None,
        row_progress: Callable[[int, float, str], None] | None = None,
    ):
        self.start = time.perf_counter()
        self.timings: dict[str, float] = {}
        self.planned = {row: max(1, steps) for row, steps in planned.items()}
        self.total = max(1, sum(self.planned.values()))
        self.done = dict.fromkeys(self.planned, 0)
        self.first_token: float | None = None
        self.progress = progress
        self.row_progress = row_progress

    def add(self, stage: str, seconds: float) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + seconds

    def step(self, stage: str, rows: list[_Row]) -> Callable[[int, int], None]:
        """The sampler's callback for one sampling call over `rows`."""
        base = {r.index: self.done[r.index] for r in rows}

        def on_token(i: int, n: int) -> None:
            if self.first_token is None:
                self.first_token = time.perf_counter() - self.start
            for row, done in base.items():
                self.done[row] = done + i
                if self.row_progress is not None:
                    self.row_progress(row, min(1.0, self.done[row] / self.planned[row]), stage)
            if self.progress is not None:
                self.progress(min(1.0, sum(self.done.values()) / self.total), stage)

        return on_token


def _live_rows(n: int, dropped) -> list[int]:
    """The rows k < n that `dropped()` (or None) does not name, in order.

    GenerationCancelled when every row is dropped: nothing of the group is wanted any more.
    """
    skip = set(dropped()) if dropped is not None else set()
    live = [k for k in range(n) if k not in skip]
    if not live:
        raise GenerationCancelled("every row of the batch was cancelled")
    return live


def _rows_skipping(n: int, dropped, decode: Callable[[int], np.ndarray]) -> np.ndarray:
    """Stack decode(k) for k < n, one row at a time; rows that `dropped()` names are zeros, not
    decoded. GenerationCancelled when every row is dropped."""
    done = {k: decode(k) for k in _live_rows(n, dropped)}
    like = next(iter(done.values()))
    return np.stack([done[k] if k in done else np.zeros_like(like) for k in range(n)])


def _scatter_rows(n: int, live: list[int], decoded: np.ndarray) -> np.ndarray:
    """decoded rows of `live` (in order) -> n rows, zeros where a row was not decoded."""
    out = np.zeros((n, *decoded.shape[1:]), dtype=decoded.dtype)
    out[live] = decoded
    return out


class Pipeline:
    # Multi-pass videos (long video, continuation, av_continuation) carry each row's decoder
    # state from one pass to the next; False decodes every pass's context frames again (as
    # before it carried; benchmarks/long_video.py compares the two).
    carry_decoder: bool = True

    def __init__(
        self,
        config: ModelConfig,
        video_tokenizer: VideoTokenizer,
        audio_tokenizer: AudioTokenizer,
        lm: PrefixLM,
        device: str | torch.device = "cpu",
        dtype: str = "auto",
        compile: bool = False,
        quantize: str = "none",
        sr: SuperResolution | None = None,
        sr_video: VideoTokenizer | None = None,
    ):
        """sr: the super-resolution stage (config.sr), which makes the card's larger size;
        sr_video: its own video tokenizer (config.sr_video), else the LM's serves both sizes.
        dtype: the LM's weights and KV cache ("auto": bfloat16 on CUDA, float32 elsewhere;
        the tokenizers stay float32). compile: sample with a torch.compile'd fixed-shape decode
        step (CUDA graphs); worth it on CUDA only. quantize: "int8" keeps the LM's block and
        output weights as int8 with a scale per row (models/quantize.py); "none": as dtype."""
        self.config = config
        self.card = config.card
        self.vocab = config.vocab
        self.device = torch.device(device)
        if dtype == "auto":
            dtype = "bfloat16" if self.device.type == "cuda" else "float32"
        if dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be auto, float32, bfloat16 or float16; got {dtype!r}")
        self.video_tokenizer = video_tokenizer.to(self.device).eval()
        self.audio_tokenizer = audio_tokenizer.to(self.device).eval()
        self.lm = lm.to(device=self.device, dtype=getattr(torch, dtype)).eval()
        self.quantize = quantize
        quantize_lm(self.lm, quantize)
        if (sr is None) != (config.sr is None) or (sr is not None and self.card.sr_scale < 2):
            raise ValueError(
                "a super-resolution stage needs config.sr, its weights and card.sr_scale >= 2, "
                "all three or none"
            )
        self.sr = None if sr is None else sr.to(self.device).eval()
        if (sr_video is None) != (config.sr_video is None):
            raise ValueError("an SR tokenizer needs config.sr_video and its weights, both or none")
        # the codes at the SR stage's size: encoded (inputs at that size) and decoded (its output)
        self.sr_video_tokenizer = (
            self.video_tokenizer if sr_video is None else sr_video.to(self.device).eval()
        )
        self.static_step = compile_decode_step() if compile else None
        self.text_encoder = load_text_encoder(
            config.text_encoder, config.text_encoder_path, config.text_tokens
        ).to(self.device)
        self.shapes = TaskShapes(config)
        self.layouts = self.shapes.layouts()

    @property
    def name(self) -> str:
        return self.config.name

    # ------------------------------------------------------------------ public API

    @overload
    def generate(
        self,
        specs: TaskSpec,
        inputs: GenerationInputs | None = None,
        *,
        progress: Callable[[float, str], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> GenerationResult: ...

    @overload
    def generate(
        self,
        specs: Sequence[TaskSpec],
        inputs: Sequence[GenerationInputs] | None = None,
        *,
        progress: Callable[[float, str], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> list[GenerationResult]: ...

    def generate(
        self,
        specs: TaskSpec | Sequence[TaskSpec],
        inputs: GenerationInputs | Sequence[GenerationInputs] | None = None,
        *,
        progress: Callable[[float, str], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> GenerationResult | list[GenerationResult]:
        """Run one spec (returns one result) or a batch (returns a list, in order).

        Raises TaskSpecError (a ValueError) when a spec cannot run with its inputs, and
        GenerationCancelled when `should_cancel()` turns True between two sampling steps.
        """
        single = isinstance(specs, TaskSpec)
        spec_list, input_list = _as_lists(specs, inputs)
        rows = [
            self._prepare_row(s, i, index)
            for index, (s, i) in enumerate(zip(spec_list, input_list))
        ]
        clock = _Clock({row.index: self._planned_steps(row) for row in rows}, progress)
        with torch.inference_mode():
            for group in _groups(rows):
                everyone = range(len(group))
                self._run_group(
                    group,
                    clock,
                    None
                    if should_cancel is None
                    else (lambda everyone=everyone: everyone if should_cancel() else ()),
                )
        if progress is not None:
            progress(1.0, "done")
        results = [self._result(row, clock) for row in rows]
        return results[0] if single else results

    def generate_batch(
        self,
        specs: Sequence[TaskSpec],
        inputs: Sequence[GenerationInputs] | None = None,
        *,
        progress: Callable[[int, float, str], None] | None = None,
        should_cancel: Callable[[], Collection[int]] | None = None,
    ) -> list[GenerationResult | Exception]:
        """A batch whose rows live on their own (a server's batch of separate requests).

        `progress(row, fraction, stage)` reports each row's sampling; `should_cancel()` returns
        the rows to drop (indices into `specs`). A row's place in the returned list holds its
        result, or the TaskSpecError that stops it from running (the others still run), or
        GenerationCancelled when it was dropped. A row dropped while its group samples leaves
        the sampler's batch at the next step (the others go on as a smaller batch, their
        outputs unchanged) and is not detokenized; a group whose rows are all dropped stops
        between two sampling steps. An error while sampling or decoding is the whole call's
        (it shares the forward passes) and is raised.
        """
        spec_list, input_list = _as_lists(list(specs), inputs)
        failed: dict[int, Exception] = {}
        rows: list[_Row] = []
        for index, (spec, row_inputs) in enumerate(zip(spec_list, input_list)):
            try:
                rows.append(self._prepare_row(spec, row_inputs, index))
            except TaskSpecError as exc:
                failed[index] = exc
        dropped = (
            (lambda: frozenset()) if should_cancel is None else (lambda: frozenset(should_cancel()))
        )
        clock = _Clock({row.index: self._planned_steps(row) for row in rows}, row_progress=progress)
        with torch.inference_mode():
            for group in _groups(rows):
                gone = dropped()
                live = [row for row in group if row.index not in gone]
                for row in group:
                    if row.index in gone:
                        failed[row.index] = GenerationCancelled("cancelled before sampling")
                if not live:
                    continue
                members = frozenset(row.index for row in live)

                def local(live=live) -> list[int]:  # the group's own row numbers
                    gone = dropped()
                    return [k for k, row in enumerate(live) if row.index in gone]

                try:
                    self._run_group(live, clock, local)
                except GenerationCancelled as exc:
                    failed.update(dict.fromkeys(members, exc))
        gone = dropped()
        by_index = {row.index: row for row in rows}
        results: list[GenerationResult | Exception] = []
        for index in range(len(spec_list)):
            if index in failed:
                results.append(failed[index])
            elif index in gone:
                results.append(GenerationCancelled("cancelled while sampling"))
            else:
                results.append(self._result(by_index[index], clock))
                if progress is not None:
                    progress(index, 1.0, "done")
        return results

    def continuous(self, spec: TaskSpec, capacity: int):
        """A running batch (models/engine.py `ContinuousBatch`) that requests like `spec` can
        join and leave between decode steps; None when `spec` takes several sampling passes
        (long video, continuation, soundtrack) and runs in a static batch."""
        from models.engine import ContinuousBatch, streams

        if not streams(spec, self.card):
            return None
        return ContinuousBatch(self, spec, capacity)

    def save(self, folder: str | Path) -> Path:
        """Write config.json and one .safetensors per component into `folder`."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        for name in COMPONENTS + ((SR_COMPONENT,) if self.sr is not None else ()):
            module = self.sr if name == SR_COMPONENT else getattr(self, name)
            state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
            save_file(state, str(folder / f"{name}.safetensors"))
        return folder

    def num_params(self) -> dict[str, int]:
        return _param_counts(
            self.video_tokenizer,
            self.audio_tokenizer,
            self.lm,
            self.sr,
            None if self.config.sr_video is None else self.sr_video_tokenizer,
        )

    # ------------------------------------------------------------------ preparation

    def _prepare_row(self, spec: TaskSpec, inputs: GenerationInputs, index: int = 0) -> _Row:
        spec.check_inputs(inputs.present())
        if spec.with_audio and spec.task is Task.text_to_image:
            raise TaskSpecError(
                "with_audio adds a soundtrack to a video; text_to_image makes a still image"
            )
        card = self.card
        if spec.size is not None and spec.size not in card.sizes:
            raise TaskSpecError(
                f"size {spec.size} is not available: model {card.name} makes "
                f"{', '.join(card.sizes)}"
            )
        seed = spec.seed if spec.seed is not None else random_seed()
        row = _Row(
            spec=spec, inputs=inputs, seed=seed, new_frames=output_frames(spec, card), index=index
        )
        source = None  # the visual input at its own size
        if inputs.video is not None:
            video = _check_array("video", inputs.video, ndim=4)
            source = resample_frames(video, inputs.video_fps, card.fps)
        if inputs.image is not None:
            source = _check_array("image", inputs.image, ndim=3)[None]
        if source is not None:
            row.frames = resize_frames(source, card.height, card.width)
            s = card.sr_scale
            if (
                spec.task in _KEEPS_INPUT
                and self.upscales(spec)
                and source.shape[1] >= s * card.height
                and source.shape[2] >= s * card.width
            ):
                row.hires = resize_frames(source, s * card.height, s * card.width)
        if inputs.audio is not None:
            audio = np.asarray(inputs.audio, dtype=np.float32)
            if audio.ndim not in (1, 2) or audio.size == 0:
                raise TaskSpecError(
                    f"audio must be float32 samples (N,) or (N, channels); got {audio.shape}"
                )
            row.audio = np.clip(
                resample_audio(audio, inputs.audio_sample_rate, card.sample_rate), -1, 1
            )
        if spec.task in (Task.inpaint, Task.outpaint, Task.stylize, Task.video_to_audio):
            row.frames = fit_length(row.frames, card.clip_frames)
            if row.hires is not None:
                row.hires = fit_length(row.hires, card.clip_frames)
        if spec.task in (Task.audio_to_video,):
            row.audio = fit_samples(row.audio, self.shapes.clip_samples)
        if spec.task is Task.av_continuation:
            seconds = len(row.frames) / card.fps
            row.audio = fit_samples(row.audio, round(seconds * card.sample_rate))
        return row

    def _planned_steps(self, row: _Row) -> int:
        """Sampling steps the row will take (for progress)."""
        n = lambda task: self.layouts[task].length - self.layouts[task].prefix_len  # noqa: E731
        task = row.spec.task
        steps = n(task) if task is not Task.continuation else 0
        frames = self.card.clip_frames if task not in (Task.continuation, Task.text_to_image) else 0
        while frames < row.new_frames and task in _EXTENDS:
            steps += n(Task.continuation)
            frames += self.card.step_frames
        if row.spec.with_audio and task not in (Task.video_to_audio, Task.av_continuation):
            total = row.new_frames + (len(row.frames) if task is Task.continuation else 0)
            windows = -(-max(1, total - 1) // (self.card.clip_frames - 1))
            steps += windows * n(Task.video_to_audio)
        return steps

    # ------------------------------------------------------------------ running

    def _run_group(self, rows: list[_Row], clock: _Clock, dropped) -> None:
        """Run rows of one task together; `dropped()` (or None) names rows (indices into
        `rows`) that are no longer wanted: they leave the sampler and are not decoded."""
        task = rows[0].spec.task
        params = SamplingParams.for_rows(
            [r.seed for r in rows],
            [r.spec.temperature for r in rows],
            [r.spec.top_k for r in rows],
            [r.spec.top_p for r in rows],
            [r.spec.guidance_scale for r in rows],
            device=self.device,
        )
        text = self._encode_text([r.spec.prompt for r in rows], clock)
        card = self.card
        if task in (Task.unconditional, Task.text_to_video, Task.text_to_image):
            out = self._sample(task, rows, params, text, clock, dropped)
            t = 1 if task is Task.text_to_image else self.shapes.t_clip
            self._set_visual(rows, out["visual_out"], t, clock, dropped)
        elif task is Task.image_to_video:
            image_tokens = self._encode_video([r.frames for r in rows], clock)  # (B, 1, h, w)
            out = self._sample(
                task, rows, params, text, clock, dropped, visual_in=image_tokens.flatten(1)
            )
            tokens = torch.cat([image_tokens.flatten(1), out["visual_out"]], dim=1)
            self._set_visual(rows, tokens, self.shapes.t_clip, clock, dropped)
        elif task is Task.continuation:
            target = [len(r.frames) + r.new_frames for r in rows]
            for _ in range(-(-rows[0].new_frames // card.step_frames)):
                self._continue(rows, params, text, clock, dropped)
            for row, t in zip(rows, target):
                row.frames = row.frames[:t]
        elif task in (Task.inpaint, Task.outpaint):
            self._fill(task, rows, params, text, clock, dropped)
        elif task is Task.stylize:
            control = [stylize_control(r.frames) for r in rows]
            tokens = self._encode_video(control, clock).flatten(1)
            out = self._sample(task, rows, params, text, clock, dropped, visual_in=tokens)
            self._set_visual(rows, out["visual_out"], self.shapes.t_clip, clock, dropped)
        elif task is Task.audio_to_video:
            codes = self._encode_audio([r.audio for r in rows], clock)
            out = self._sample(task, rows, params, text, clock, dropped, audio_in=codes)
            self._set_visual(rows, out["visual_out"], self.shapes.t_clip, clock, dropped)
        elif task is Task.video_to_audio:
            for row, audio in zip(rows, self._soundtrack(rows, params, text, clock, dropped)):
                row.audio = audio
        elif task is Task.av_continuation:
            self._av_continue(rows, params, text, clock, dropped)
        # Long video: continue the first clip on its own last second.
        if task in _EXTENDS and task is not Task.continuation and rows[0].codes is None:
            while len(rows[0].frames) < rows[0].new_frames:
                self._continue(rows, params, text, clock, dropped)
            for row in rows:
                row.frames = row.frames[: row.new_frames]
        if rows[0].spec.with_audio and task not in (
            Task.video_to_audio,
            Task.av_continuation,
            Task.audio_to_video,
        ):
            for row, audio in zip(rows, self._soundtrack(rows, params, text, clock, dropped)):
                row.audio = audio
        if task is Task.audio_to_video:  # the result plays the audio it was made from
            for row in rows:
                n = card.clip_frames if row.frames is None else len(row.frames)
                row.audio = fit_samples(row.audio, round(n / card.fps * card.sample_rate))

    def _sample(
        self,
        task: Task,
        rows: list[_Row],
        params: SamplingParams,
        text,
        clock: _Clock,
        dropped,
        **content,
    ) -> dict[str, torch.Tensor]:
        layout = self.layouts[task]
        states, mask = text if layout.text_slice is not None else (None, None)
        batch = assemble(
            layout, self.vocab, text=states, text_mask=mask, batch_size=len(rows), **content
        )
        t0 = time.perf_counter()
        out = generate_tokens(
            self.lm,
            self.vocab,
            batch,
            params,
            progress=clock.step(task.value, rows),
            drop_rows=dropped,
            static_step=self.static_step,
        )
        clock.add("sampling", time.perf_counter() - t0)
        generated = (batch.forced < 0).sum(1).tolist()
        for row, n in zip(rows, generated):
            row.prefix_tokens += layout.prefix_len
            row.generated_tokens += n
        return split_output(layout, self.vocab, out)

    def _continue(self, rows: list[_Row], params, text, clock, dropped) -> None:
        """Add `step_frames` frames to every row, conditioned on its last `context_frames`."""
        card = self.card
        context = [_tail(r.frames, card.context_frames) for r in rows]
        tokens = self._encode_video(context, clock).flatten(1)  # (B, t_ctx * h * w)
        out = self._sample(Task.continuation, rows, params, text, clock, dropped, visual_in=tokens)
        for row, f in zip(rows, self._decode_pass(rows, tokens, out["visual_out"], clock, dropped)):
            row.frames = np.concatenate([row.frames, f])

    def _decode_pass(
        self, rows: list[_Row], context: torch.Tensor, new: torch.Tensor, clock: _Clock, dropped
    ) -> np.ndarray:
        """The new frames of one pass of a multi-pass video (B, step_frames, H, W, 3), from
        its context codes (B, t_ctx*h*w) and new codes (B, n*h*w): a row's first pass decodes
        both and keeps the frames after the context; later ones decode the new codes alone,
        on the decoder state the row carries (`carry_decoder`). Dropped rows stay black."""
        ctx = self.card.context_frames
        if not self.carry_decoder:
            full = torch.cat([context, new], dim=1)
            return self._decode_video(full, self.shapes.t_clip, clock, dropped)[:, ctx:]
        t0 = time.perf_counter()

        def decode(k: int) -> np.ndarray:
            row = rows[k]
            if row.decoder is None:  # its first pass: the context warms a fresh state
                row.decoder = DecoderState()
                codes = torch.cat([context[k], new[k]])
                return self.decode_video_next(codes, row.decoder)[ctx:]
            return self.decode_video_next(new[k], row.decoder)

        frames = _rows_skipping(len(rows), dropped, decode)
        clock.add("detokenize", time.perf_counter() - t0)
        return frames

    def _fill(self, task: Task, rows: list[_Row], params, text, clock, dropped) -> None:
        tokens = self._encode_video([r.frames for r in rows], clock)  # (B, t, h, w)
        masks = []
        for row in rows:
            src = row.inputs.video.shape[1:3]
            box = latent_box_mask(row.spec.mask_box, src, self.shapes.latent_hw)
            masks.append(box if task is Task.inpaint else ~box)
        masked = torch.from_numpy(np.stack(masks))[:, None].to(tokens.device).expand_as(tokens)
        visual_in = torch.where(masked, -1, tokens).flatten(1)
        out = self._sample(
            task,
            rows,
            params,
            text,
            clock,
            dropped,
            visual_in=visual_in,
            visual_out_known=visual_in,
        )
        self._set_visual(rows, out["visual_out"], self.shapes.t_clip, clock, dropped)

    def _soundtrack(self, rows: list[_Row], params, text, clock, dropped) -> list[np.ndarray]:
        """video_to_audio over clip-long windows of each row's video, joined end to end."""
        card = self.card
        step = card.clip_frames - 1  # windows share an edge frame; audio covers step/fps each
        n_frames = len(rows[0].frames)
        pieces: list[list[np.ndarray]] = [[] for _ in rows]
        for start in range(0, max(1, n_frames - 1), step):
            window = [fit_length(r.frames[start:], card.clip_frames) for r in rows]
            tokens = self._encode_video(window, clock).flatten(1)
            out = self._sample(
                Task.video_to_audio, rows, params, text, clock, dropped, visual_in=tokens
            )
            audio = self._decode_audio(out["audio_out"], clock, dropped)
            for piece, a in zip(pieces, audio):
                piece.append(a[: round(step / card.fps * card.sample_rate)])
        total = round(n_frames / card.fps * card.sample_rate)
        return [fit_samples(np.concatenate(p), total) for p in pieces]

    def _av_continue(self, rows: list[_Row], params, text, clock, dropped) -> None:
        card, shapes = self.card, self.shapes
        context = [_tail(r.frames, card.context_frames) for r in rows]
        tokens = self._encode_video(context, clock).flatten(1)
        audio_ctx = [_tail_samples(r.audio, shapes.context_samples) for r in rows]
        codes = self._encode_audio(audio_ctx, clock)
        out = self._sample(
            Task.av_continuation,
            rows,
            params,
            text,
            clock,
            dropped,
            visual_in=tokens,
            audio_in=codes,
        )
        frames = self._decode_pass(rows, tokens, out["visual_out"], clock, dropped)
        audio = self._decode_audio(out["audio_out"], clock, dropped)
        for row, f, a in zip(rows, frames, audio):
            row.frames = np.concatenate([row.frames, f])
            row.audio = np.concatenate([row.audio, fit_samples(a, shapes.step_samples)])

    # ------------------------------------------------------------------ modality helpers

    def _encode_text(self, prompts: list[str | None], clock: _Clock):
        t0 = time.perf_counter()
        states, mask = self.text_encoder(prompts)
        clock.add("text", time.perf_counter() - t0)
        return states, mask

    def _encode_video(self, clips: list[np.ndarray], clock: _Clock) -> torch.Tensor:
        t0 = time.perf_counter()
        # Row by row: a convolution over a batch may round differently from one over a single
        # clip, and a request's output must not depend on what it was batched with.
        tokens = torch.cat(
            [
                self.video_tokenizer.encode(VideoTokenizer.frames_to_tensor(c).to(self.device))
                for c in clips
            ]
        )
        clock.add("tokenize", time.perf_counter() - t0)
        return tokens

    def _encode_audio(self, clips: list[np.ndarray], clock: _Clock) -> torch.Tensor:
        t0 = time.perf_counter()
        codes = torch.cat(
            [self.audio_tokenizer.encode(torch.from_numpy(c)[None].to(self.device)) for c in clips]
        )  # row by row, as in _encode_video
        clock.add("tokenize", time.perf_counter() - t0)
        return codes

    def _set_visual(
        self, rows: list[_Row], tokens: torch.Tensor, t: int, clock: _Clock, dropped
    ) -> None:
        """Each row's output from its flat visual codes (B, t*h*w): a row whose one-clip output
        goes through the SR stage keeps its codes for it; the others are decoded (rows that
        `dropped()` names are neither)."""
        h, w = self.shapes.latent_hw
        live = _live_rows(len(rows), dropped)  # GenerationCancelled when none is
        keep = {k for k in live if self._sr_from_codes(rows[k], t)}
        for k in keep:
            rows[k].codes = tokens[k].reshape(t, h, w)
        gone = set(range(len(rows))) - set(live)
        if not set(live) - keep:
            return  # nothing to decode at the card's size
        frames = self._decode_video(tokens, t, clock, lambda: gone | keep)
        for k, row in enumerate(rows):
            if k not in keep:
                row.frames = frames[k]

    def _sr_from_codes(self, row: _Row, t: int) -> bool:
        """Whether the SR stage reads this row's codes: its output is one pass's visual codes
        (no continuation after it, no soundtrack made from its frames)."""
        return (
            self.upscales(row.spec)
            and not row.spec.with_audio
            and row.new_frames <= 4 * (t - 1) + 1
        )

    def _decode_video(
        self, tokens: torch.Tensor, t: int, clock: _Clock, dropped=None
    ) -> np.ndarray:
        """Flat visual codes (B, t*h*w) -> uint8 frames (B, T, H, W, 3) in one tokenizer call
        over the rows `dropped()` does not name; dropped rows are not decoded and stay black."""
        t0 = time.perf_counter()
        live = _live_rows(len(tokens), dropped)
        if len(live) == len(tokens):
            frames = self.decode_video_tokens(tokens, t)
        else:
            index = torch.tensor(live, device=tokens.device)
            frames = _scatter_rows(len(tokens), live, self.decode_video_tokens(tokens[index], t))
        clock.add("detokenize", time.perf_counter() - t0)
        return frames

    def decode_video_tokens(self, tokens: torch.Tensor, t: int) -> np.ndarray:
        """Flat visual codes (B, t*h*w) of `t` latent frames -> uint8 frames (B, T, H, W, 3),
        T = 4(t - 1) + 1. A row's pixels are exactly those of the row decoded alone (the
        tokenizer's convolutions run on oneDNN at every batch size on a CPU;
        tests/models/test_video_tokenizer.py checks it).

        On a CPU the rows are decoded one by one: with oneDNN at batch 1 that was faster than
        one call (0.70x at batch 8 for one call, demo, 1 thread); on an accelerator, where a
        batch fills the device, in one call.
        """
        h, w = self.shapes.latent_hw
        if tokens.ndim != 2 or t < 1 or tokens.shape[1] != t * h * w:
            raise ValueError(
                f"tokens must be flat visual codes (B, t*h*w) = (B, {t}*{h}*{w}); "
                f"got shape {tuple(tokens.shape)}"
            )
        grids = tokens.reshape(-1, t, h, w).to(self.device)
        if self.device.type == "cpu":
            return np.concatenate(
                [
                    VideoTokenizer.tensor_to_frames(self.video_tokenizer.decode(g[None]))
                    for g in grids
                ]
            )
        return VideoTokenizer.tensor_to_frames(self.video_tokenizer.decode(grids))

    def decode_video_prefix(self, tokens_1row: torch.Tensor, latent_frames: int) -> np.ndarray:
        """The first `latent_frames` (k) latent frames of one row's flat visual codes
        ((t*h*w,) or (1, t*h*w); codes past the first k*h*w are not read) -> uint8 frames
        (4(k - 1) + 1, H, W, 3): a preview. The tokenizer is causal in time, so these are the
        first frames of the full decode, exactly."""
        h, w = self.shapes.latent_hw
        if tokens_1row.ndim not in (1, 2) or (tokens_1row.ndim == 2 and len(tokens_1row) != 1):
            raise ValueError(
                f"tokens_1row must be one row of flat visual codes, (t*h*w,) or (1, t*h*w); "
                f"got shape {tuple(tokens_1row.shape)}"
            )
        flat = tokens_1row.reshape(-1)
        available = flat.shape[0] // (h * w)
        if not 1 <= latent_frames <= available:
            raise ValueError(
                f"latent_frames must be 1..{available} (the whole latent frames of {flat.shape[0]} "
                f"codes at {h}x{w} per frame); got {latent_frames}"
            )
        return self.decode_video_tokens(flat[None, : latent_frames * h * w], latent_frames)[0]

    def decode_video_carried(
        self, tokens_1row: torch.Tensor, latent_frames: int, state: DecoderState
    ) -> np.ndarray:
        """The frames of one row's latent frames `state.latent_frames`..`latent_frames` - 1,
        decoded with the causal decoder's state carried from the earlier ones (`state`, one
        per clip, updated): uint8 (T_new, H, W, 3). Every call's frames, in order, are the
        clip's frames (within one level per channel, at a few values, of one whole decode:
        the convs' float rounding on shorter inputs), and each call costs its new frames
        alone, where `decode_video_prefix` decodes the prefix again."""
        h, w = self.shapes.latent_hw
        flat = tokens_1row.reshape(-1)
        available = flat.shape[0] // (h * w)
        if not state.latent_frames < latent_frames <= available:
            raise ValueError(
                f"latent_frames must be {state.latent_frames + 1}..{available} (after the "
                f"{state.latent_frames} decoded, of {available} whole latent frames); "
                f"got {latent_frames}"
            )
        return self.decode_video_next(
            flat[state.latent_frames * h * w : latent_frames * h * w], state
        )

    def decode_video_next(self, codes: torch.Tensor, state: DecoderState) -> np.ndarray:
        """Flat visual codes of whole latent frames (n*h*w,) that come after those `state`
        has decoded -> their frames, uint8 (T_new, H, W, 3); `state` moves on."""
        h, w = self.shapes.latent_hw
        if codes.ndim != 1 or codes.numel() == 0 or codes.numel() % (h * w):
            raise ValueError(
                f"codes must be whole latent frames of one row, (n*{h}*{w},); "
                f"got shape {tuple(codes.shape)}"
            )
        grid = codes.reshape(1, -1, h, w).to(self.device)
        return VideoTokenizer.tensor_to_frames(self.video_tokenizer.decode_more(grid, state))[0]

    def _decode_audio(self, codes: torch.Tensor, clock: _Clock, dropped=None) -> np.ndarray:
        t0 = time.perf_counter()
        # Row by row: on a CPU a batched SoundStream decode was no faster (0.5x to 0.9x).
        audio = _rows_skipping(
            len(codes),
            dropped,
            lambda k: self.audio_tokenizer.decode(codes[k][None]).float().cpu().numpy()[0],
        )
        clock.add("detokenize", time.perf_counter() - t0)
        return np.clip(audio, -1, 1)

    def upscales(self, spec: TaskSpec) -> bool:
        """Whether `spec`'s output goes through the super-resolution stage: a visual output
        made by the model, at a size above the LM's."""
        return (
            self.sr is not None
            and spec.task is not Task.video_to_audio
            and self.card.upscales(spec.size)
        )

    def upscale(self, frames: np.ndarray, prompt: str | None, seed: int, clock) -> np.ndarray:
        """Frames (T, H, W, 3) at the card's size -> (T, sH, sW, 3) through the SR stage: each
        window of up to a clip's frames (the tokenizer's causal unit; an image is one frame)
        tokenized, then as `upscale_codes` (window k with seed + k)."""
        n = self.card.clip_frames
        out = []
        for k, start in enumerate(range(0, len(frames), n)):
            window = frames[start : start + n]
            padded = fit_length(window, 4 * (-(-(len(window) - 1) // 4)) + 1)  # 4j + 1 frames
            t0 = time.perf_counter()
            with torch.inference_mode():
                x = VideoTokenizer.frames_to_tensor(padded).to(self.device)
                codes = self.video_tokenizer.encode(x)[0]  # (t, h, w)
            clock.add("super_resolution", time.perf_counter() - t0)
            out.append(self.upscale_codes(codes, prompt, seed + k, clock)[: len(window)])
        return np.concatenate(out)

    def upscale_codes(
        self, codes: torch.Tensor, prompt: str | None, seed: int, clock, row: _Row | None = None
    ) -> np.ndarray:
        """Visual codes (t, h, w) at the card's size -> frames (4(t - 1) + 1, sH, sW, 3): the
        SR stage samples the codes at s times the size in its parallel steps (with `seed` and
        the prompt), and its video tokenizer (the LM's unless the checkpoint has its own)
        decodes them. A `row` with an input at the stage's size (`hires`) gives the stage that
        input's own tokens where the output keeps the input: an image_to_video's first latent
        frame, the cells outside an inpaint's box, those inside an outpaint's."""
        sr = cast(SuperResolution, self.sr)
        t0 = time.perf_counter()
        with torch.inference_mode():
            text = mask = None
            if prompt:
                text, mask = self.text_encoder([prompt])
            low = codes[None].to(self.device)
            given = cells = None
            if row is not None and row.hires is not None:
                given, cells = self._given_codes(row, codes.shape[0])
            high = sample_sr(
                sr,
                low,
                text,
                mask,
                [seed],
                guidance=sr.config.guidance,
                given=given,
                given_mask=cells,
            )
            frames = VideoTokenizer.tensor_to_frames(self.sr_video_tokenizer.decode(high))[0]
        clock.add("super_resolution", time.perf_counter() - t0)
        return frames

    def _given_codes(self, row: _Row, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A row's input at the SR size, tokenized at that size -> (codes (1, t, sh, sw), the
        cells (1, t, sh, sw) the output keeps from the input)."""
        _, sh, sw = cast(SuperResolution, self.sr).config.grid
        x = VideoTokenizer.frames_to_tensor(cast(np.ndarray, row.hires)).to(self.device)
        codes = self.sr_video_tokenizer.encode(x)[0].long()  # (t_in, sh, sw)
        given = torch.zeros((t, sh, sw), dtype=torch.long, device=codes.device)
        cells = torch.zeros((t, sh, sw), dtype=torch.bool, device=codes.device)
        if row.spec.task is Task.image_to_video:
            given[0], cells[0] = codes[0], True
        else:  # inpaint, outpaint: the clip's cells that the LM kept
            n = min(t, len(codes))
            box = latent_box_mask(row.spec.mask_box, row.inputs.video.shape[1:3], (sh, sw))
            kept = torch.from_numpy(~box if row.spec.task is Task.inpaint else box)
            given[:n], cells[:n] = codes[:n], kept.to(codes.device)
        return given[None], cells[None]

    def _result(self, row: _Row, clock: _Clock) -> GenerationResult:
        card = self.card
        if row.codes is not None:
            frames = self.upscale_codes(row.codes, row.spec.prompt, row.seed, clock, row)
            extends = row.spec.task in _EXTENDS  # a short video: the first frames of the clip
            row.frames = frames[: row.new_frames] if extends else frames
        elif self.upscales(row.spec) and row.frames is not None:
            row.frames = self.upscale(row.frames, row.spec.prompt, row.seed, clock)
        return GenerationResult(
            frames=row.frames,
            fps=card.fps,
            audio=None if row.audio is None else row.audio.astype(np.float32),
            sample_rate=None if row.audio is None else card.sample_rate,
            seed=row.seed,
            tokens={"prefix": row.prefix_tokens, "generated": row.generated_tokens},
            timings=dict(clock.timings),
            time_to_first_token=clock.first_token,
        )


_EXTENDS = {Task.unconditional, Task.text_to_video, Task.image_to_video, Task.continuation}
# tasks whose output keeps part of the input as it is: upscaled, the SR stage keeps the input's
# own tokens at its size there (when the input is at least that size)
_KEEPS_INPUT = {Task.image_to_video, Task.inpaint, Task.outpaint}


def _as_lists(specs, inputs) -> tuple[list[TaskSpec], list[GenerationInputs]]:
    spec_list = [specs] if isinstance(specs, TaskSpec) else list(specs)
    if inputs is None:
        input_list = [GenerationInputs() for _ in spec_list]
    else:
        input_list = [inputs] if isinstance(inputs, GenerationInputs) else list(inputs)
    if len(input_list) != len(spec_list):
        raise ValueError(f"got {len(spec_list)} specs but {len(input_list)} inputs")
    return spec_list, input_list


def _groups(rows: list[_Row]) -> list[list[_Row]]:
    """Rows that can share one sampling batch: same task, output length, soundtrack and input
    length, so they share every token shape and every number of steps."""
    groups: dict[tuple, list[_Row]] = {}
    for row in rows:
        key = (
            row.spec.task,
            row.new_frames,
            row.spec.with_audio,
            0 if row.frames is None else len(row.frames),
        )
        groups.setdefault(key, []).append(row)
    return list(groups.values())


def _tail(frames: np.ndarray, n: int) -> np.ndarray:
    """The last n frames; a shorter video is padded at the start by holding its first frame."""
    if len(frames) >= n:
        return frames[-n:]
    return np.concatenate([np.repeat(frames[:1], n - len(frames), axis=0), frames])


def _tail_samples(audio: np.ndarray, n: int) -> np.ndarray:
    if len(audio) >= n:
        return audio[-n:]
    return np.concatenate([np.zeros(n - len(audio), dtype=np.float32), audio])


def _check_array(name: str, value: np.ndarray, ndim: int) -> np.ndarray:
    shape = "(H, W, 3)" if ndim == 3 else "(T, H, W, 3)"
    value = np.asarray(value)
    if value.dtype != np.uint8 or value.ndim != ndim or value.shape[-1] != 3 or 0 in value.shape:
        raise TaskSpecError(f"{name} must be uint8 RGB {shape}; got {value.dtype} {value.shape}")
    return value


def _param_counts(video, audio, lm, sr=None, sr_video=None) -> dict[str, int]:
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    counts = {"video_tokenizer": count(video), "audio_tokenizer": count(audio), "lm": count(lm)}
    if sr is not None:
        counts[SR_COMPONENT] = count(sr)
    if sr_video is not None:
        counts[SR_TOKENIZER] = count(sr_video)
    return counts


# ---------------------------------------------------------------------- loading


def _build(config: ModelConfig, seed: int | None):
    """Components of `config`: initialised from `seed`, or empty (meta) for loading."""
    if seed is None:
        with torch.device("meta"):
            return VideoTokenizer(config.video), AudioTokenizer(config.audio), PrefixLM(config.lm)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        video, audio, lm = (
            VideoTokenizer(config.video),
            AudioTokenizer(config.audio),
            PrefixLM(config.lm),
        )
        lm.init_weights()
    return video, audio, lm


def load_tokenizers(folder: Path, config: ModelConfig) -> tuple[VideoTokenizer, AudioTokenizer]:
    """The two tokenizers of a checkpoint folder (one may be mid-training, without an LM)."""
    from safetensors.torch import load_file

    out = []
    for name, cls, cfg in (
        ("video_tokenizer", VideoTokenizer, config.video),
        ("audio_tokenizer", AudioTokenizer, config.audio),
    ):
        path = Path(folder) / f"{name}.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {folder} lacks {path.name}")
        module = cls(cfg)
        module.load_state_dict(load_file(str(path)))
        out.append(module.eval())
    return out[0], out[1]


def resolve_device(device: str) -> str:
    """ "auto": cuda when torch sees a GPU, else cpu; a cuda device torch cannot see is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: torch sees no CUDA GPU here; use cpu")
    return device


def load_component(folder: Path, name: str, build, why: str, device="cpu") -> Any:
    """The component `name` of a checkpoint folder, built empty by `build` and loaded (in eval
    mode); a missing file is an error that says why the folder needs it (`why`, in brackets)."""
    from safetensors.torch import load_file

    path = folder / f"{name}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {folder} lacks {path.name} ({why})")
    with torch.device("meta"):
        module = build()
    module.load_state_dict(load_file(str(path), device=str(device)), assign=True, strict=True)
    return module.eval()


def load_pipeline(
    name_or_path: str = "tiny",
    device: str | torch.device = "cpu",
    dtype: str = "auto",
    compile: bool = False,
    quantize: str = "none",
) -> Pipeline:
    """A ready pipeline: a checkpoint folder, a shipped checkpoint by name, or a preset.

    dtype, compile and quantize: see Pipeline.
    """
    folder = resolve_checkpoint(name_or_path)
    options = dict(device=device, dtype=dtype, compile=compile, quantize=quantize)
    if folder is None:
        config = ModelConfig.from_name(name_or_path)
        log.info("building %s from seed %d (no checkpoint)", name_or_path, PRESET_SEED)
        return Pipeline(config, *_build(config, PRESET_SEED), **options)
    from safetensors.torch import load_file

    config = ModelConfig.from_dict(json.loads((folder / "config.json").read_text()))
    modules = _build(config, seed=None)
    for name, module in zip(COMPONENTS, modules):
        path = folder / f"{name}.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {folder} lacks {path.name}")
        module.load_state_dict(load_file(str(path), device=str(device)), assign=True, strict=True)
    lm = modules[2]
    lm.rope = rope_tables(config.lm.max_seq_len, config.lm.head_dim, config.lm.rope_base)
    sr = sr_video = None
    if config.sr is not None:
        sr = load_component(
            folder,
            SR_COMPONENT,
            lambda: SuperResolution(cast(SRConfig, config.sr)),
            "its config.json has a super_resolution stage; train it with `videopoet train sr`",
            device,
        )
    if config.sr_video is not None:
        sr_video = load_component(
            folder,
            SR_TOKENIZER,
            lambda: VideoTokenizer(cast(VideoTokenizerConfig, config.sr_video)),
            f"its config.json has {SR_TOKENIZER}; give `videopoet train sr` --sr-tokenizer-from "
            "the folder of a video tokenizer trained at the larger size",
            device,
        )
    log.info("loaded %s from %s", config.name, folder)
    return Pipeline(config, *modules, **options, sr=sr, sr_video=sr_video)


def describe(name_or_path: str) -> dict:
    """Parameter counts, vocabulary layout and token counts of a model, without its weights."""
    folder = resolve_checkpoint(name_or_path)
    if folder is not None:
        config = ModelConfig.from_dict(json.loads((folder / "config.json").read_text()))
    else:
        config = ModelConfig.from_name(name_or_path)
    with torch.device("meta"):
        video, audio, lm = (
            VideoTokenizer(config.video),
            AudioTokenizer(config.audio),
            PrefixLM(config.lm),
        )
        bert = MiniLMEncoder(BertConfig())
        sr = SuperResolution(config.sr) if config.sr is not None else None
        sr_video = VideoTokenizer(config.sr_video) if config.sr_video is not None else None
    params = _param_counts(video, audio, lm, sr, sr_video)
    params["text_encoder (frozen)"] = sum(p.numel() for p in bert.parameters())
    params["total"] = sum(params.values())
    vt, at = config.video, config.audio
    clip_samples = round(2.125 * at.sample_rate)
    shapes = TaskShapes(config)
    return {
        "model": config.name,
        "checkpoint": str(folder) if folder else None,
        "card": config.card.to_dict(),
        "parameters": params,
        "lm": {
            "dim": config.lm.dim,
            "layers": config.lm.n_layers,
            "heads": config.lm.n_heads,
            "ffn_hidden": config.lm.ffn_hidden,
        },
        "vocabulary": config.vocab.describe(),
        "tokens": {
            "video_17x128x128": int(np.prod(vt.latent_shape(17, 128, 128))),
            "image_128x128": int(np.prod(vt.latent_shape(1, 128, 128))),
            "video_17x224x128": int(np.prod(vt.latent_shape(17, 224, 128))),
            "audio_2.125s": at.num_frames(clip_samples) * at.num_quantizers,
        },
        "sequence_lengths": {
            task.value: layout.length for task, layout in shapes.layouts().items()
        },
        "context_length": config.lm.max_seq_len,
        "sizes": config.card.sizes,
        "super_resolution": None
        if config.sr is None
        else {
            "scale": config.sr.scale,
            "latent_grid": list(config.sr.grid),  # (t, h, w) of one clip at the larger size
            "tokens_per_clip": int(np.prod(config.sr.grid)),
            "from_tokens_per_clip": int(np.prod(config.sr.low_grid)),
            "steps": config.sr.steps,
            "code_groups": config.sr.code_groups,
            "own_tokenizer": config.sr_video is not None,
        },
    }
