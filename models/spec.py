"""The contract between the service and the model: the task spec, and the pipeline API.

The task spec is one request to the model, shared by the API, the workers and the pipeline.
It travels between them as JSON (``spec.model_dump_json()``), never as a pickle.
`GenerationPipeline` is what the workers and the CLI call: decoded inputs in
(`GenerationInputs`), frames and audio out (`GenerationResult`); `models.pipeline.Pipeline`
implements it.

This module must stay free of torch (and of anything heavy): the API process imports it to
validate requests, the worker imports it to read jobs, the pipeline takes it as its input.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.card import ModelCard


class Task(str, Enum):
    """Every task the one language model does. The value is the name used on the wire."""

    unconditional = "unconditional"
    text_to_video = "text_to_video"
    text_to_image = "text_to_image"
    image_to_video = "image_to_video"
    continuation = "continuation"  # future frames; `seconds` > one step = long video
    inpaint = "inpaint"  # regenerate the inside of `mask_box`
    outpaint = "outpaint"  # keep the inside of `mask_box`, generate the rest
    stylize = "stylize"  # motion (flow) and depth of `video`, look from `prompt`
    audio_to_video = "audio_to_video"
    video_to_audio = "video_to_audio"
    av_continuation = "av_continuation"  # continue a video and its soundtrack together


class Input(str, Enum):
    """The inputs a task can take besides its sampling parameters."""

    prompt = "prompt"
    image = "image"
    video = "video"
    audio = "audio"
    mask_box = "mask_box"


# What each task needs (required) and what it may use (optional). One place, read by the
# API's validation, the pipeline's checks and the docs.
TASK_INPUTS: dict[Task, tuple[frozenset[Input], frozenset[Input]]] = {
    Task.unconditional: (frozenset(), frozenset()),
    Task.text_to_video: (frozenset({Input.prompt}), frozenset()),
    Task.text_to_image: (frozenset({Input.prompt}), frozenset()),
    Task.image_to_video: (frozenset({Input.image}), frozenset({Input.prompt})),
    Task.continuation: (frozenset({Input.video}), frozenset({Input.prompt})),
    Task.inpaint: (frozenset({Input.video}), frozenset({Input.prompt, Input.mask_box})),
    Task.outpaint: (frozenset({Input.video}), frozenset({Input.prompt, Input.mask_box})),
    Task.stylize: (frozenset({Input.video, Input.prompt}), frozenset()),
    Task.audio_to_video: (frozenset({Input.audio}), frozenset({Input.prompt})),
    Task.video_to_audio: (frozenset({Input.video}), frozenset({Input.prompt})),
    Task.av_continuation: (frozenset({Input.video, Input.audio}), frozenset({Input.prompt})),
}

# Tasks whose output is a still image rather than a clip.
IMAGE_TASKS = frozenset({Task.text_to_image})
# Tasks whose output is audio only (returned muxed over the input video).
AUDIO_TASKS = frozenset({Task.video_to_audio})
# Tasks whose `seconds` may exceed one clip: long video, made by continuing the clip on its
# own last second until it is long enough.
EXTENDABLE_TASKS = frozenset(
    {Task.unconditional, Task.text_to_video, Task.image_to_video, Task.continuation}
)

MAX_PROMPT_CHARS = 2000
# Seeds are 0..MAX_SEED (what torch.Generator.manual_seed takes); a request without one gets
# a uniform draw from that whole range (random_seed).
MAX_SEED = 2**63 - 1


def random_seed() -> int:
    """A seed for a request that names none: uniform over 0..MAX_SEED."""
    return secrets.randbelow(MAX_SEED + 1)


class TaskSpecError(ValueError):
    """A spec that cannot run: the message says what is wrong and what is accepted."""


class TaskSpec(BaseModel):
    """One generation request as the model sees it.

    Inputs (image, video, audio) are references the service resolves (artifact names); the
    pipeline receives them decoded, beside the spec. `has_*` flags let the pipeline check
    what a task needs without the references themselves.
    """

    model_config = ConfigDict(extra="forbid", use_enum_values=False)

    task: Task
    prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    # Output length in seconds. None: one clip (the model's native length, 2.125 s for the
    # paper's 17 frames at 8 fps). For `continuation`, the length of the new part (default:
    # one step, 1 s). Only EXTENDABLE_TASKS go beyond one clip (long video).
    seconds: float | None = Field(default=None, gt=0, le=60)
    # None: the pipeline draws one; the service always fills it so a job can be replayed.
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    # Classifier-free guidance scale; 1.0 turns guidance off (no unconditional rows).
    guidance_scale: float = Field(default=1.0, ge=0.0, le=30.0)
    # 0 means greedy (argmax).
    temperature: float = Field(default=1.0, ge=0.0, le=5.0)
    top_k: int | None = Field(default=None, ge=1)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    # On a video task: run video_to_audio after it and return a soundtrack.
    with_audio: bool = False
    # Output size WIDTHxHEIGHT, one of the model card's `sizes`; None: its default (the
    # largest). A size above the LM's goes through the super-resolution stage.
    size: str | None = None
    # Pixel box (x0, y0, x1, y1) in the input video's own pixels, x1 > x0, y1 > y0.
    # inpaint regenerates inside it; outpaint keeps inside it and generates the rest.
    # None: the centre half of the frame.
    mask_box: tuple[int, int, int, int] | None = None
    # References to stored inputs (resolved by the service; ignored by the pipeline).
    image: str | None = None
    video: str | None = None
    audio: str | None = None

    @field_validator("mask_box")
    @classmethod
    def _check_box(cls, box: tuple[int, int, int, int] | None) -> tuple[int, int, int, int] | None:
        if box is None:
            return None
        x0, y0, x1, y1 = box
        if min(box) < 0 or x1 <= x0 or y1 <= y0:
            raise ValueError(
                f"mask_box must be x0,y0,x1,y1 pixels with 0 <= x0 < x1 and 0 <= y0 < y1; "
                f"got {x0},{y0},{x1},{y1}"
            )
        return box

    @field_validator("prompt")
    @classmethod
    def _strip_prompt(cls, prompt: str | None) -> str | None:
        if prompt is None:
            return None
        prompt = prompt.strip()
        return prompt or None

    @model_validator(mode="after")
    def _check_seconds(self) -> TaskSpec:
        if self.task in IMAGE_TASKS and self.seconds is not None:
            raise ValueError(f"{self.task.value} makes a still image: leave `seconds` unset")
        return self

    def required_inputs(self) -> frozenset[Input]:
        return TASK_INPUTS[self.task][0]

    def accepted_inputs(self) -> frozenset[Input]:
        required, optional = TASK_INPUTS[self.task]
        return required | optional

    def check_inputs(self, present: set[Input]) -> None:
        """Raise TaskSpecError unless `present` covers what the task needs.

        `present` is the set of inputs the caller has (the prompt counts when set here).
        Inputs a task does not use are an error too: silently ignoring an upload hides a
        mistake from the user.
        """
        have = set(present)
        if self.prompt:
            have.add(Input.prompt)
        if self.mask_box is not None:
            have.add(Input.mask_box)
        missing = self.required_inputs() - have
        if missing:
            raise TaskSpecError(
                f"task {self.task.value} needs {_names(self.required_inputs())}; "
                f"missing {_names(missing)}"
            )
        unused = have - self.accepted_inputs()
        if unused:
            accepted = _names(self.accepted_inputs()) or "no inputs"
            raise TaskSpecError(
                f"task {self.task.value} does not use {_names(unused)}; it accepts {accepted}"
            )


def _names(inputs: frozenset[Input] | set[Input]) -> str:
    return ", ".join(sorted(i.value for i in inputs))


def output_frames(spec: TaskSpec, card: ModelCard) -> int:
    """How many frames the model generates for `spec` (for continuation: the new ones).

    Raises TaskSpecError when `seconds` is outside what the task accepts on this model.
    """
    if spec.task in IMAGE_TASKS:
        return 1
    if spec.task is Task.continuation:
        seconds = spec.seconds if spec.seconds is not None else card.step_frames / card.fps
    elif spec.seconds is None:
        return card.clip_frames
    else:
        seconds = spec.seconds
    frames = max(1, round(seconds * card.fps))
    if spec.task in EXTENDABLE_TASKS:
        limit = card.max_seconds
        if seconds > limit:
            raise TaskSpecError(
                f"seconds={seconds:g} is too long: {spec.task.value} accepts up to {limit:g} s"
            )
        return frames
    if frames > card.clip_frames:
        raise TaskSpecError(
            f"seconds={seconds:g} is too long for {spec.task.value}, which makes one clip of "
            f"{card.clip_seconds:g} s; leave seconds unset or at most {card.clip_seconds:g} "
            f"(longer videos: {', '.join(sorted(t.value for t in EXTENDABLE_TASKS))})"
        )
    return frames


# --- the pipeline API ------------------------------------------------------------------------


class GenerationCancelled(Exception):
    """Every row of the batch was dropped: sampling stopped between two steps."""


@dataclass
class GenerationInputs:
    """Decoded inputs of one request; any size, frame rate or sample rate."""

    image: np.ndarray | None = None  # (H, W, 3) uint8
    video: np.ndarray | None = None  # (T, H, W, 3) uint8
    video_fps: float | None = None
    audio: np.ndarray | None = None  # (N,) float32 mono in [-1, 1]
    audio_sample_rate: int | None = None

    def present(self) -> set[Input]:
        return {
            Input(name) for name in ("image", "video", "audio") if getattr(self, name) is not None
        }


@dataclass
class GenerationResult:
    frames: np.ndarray  # (T, H, W, 3) uint8; T == 1 for text_to_image
    fps: float
    audio: np.ndarray | None  # (N,) float32 mono
    sample_rate: int | None
    seed: int
    tokens: dict[str, int] = field(default_factory=dict)  # {"prefix": n, "generated": n}
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    time_to_first_token: float | None = None


class GenerationPipeline(Protocol):
    """What the service calls on a loaded model: one request at a time.

    `VIDEOPOET_PIPELINE_FACTORY` may give any object of this shape; `models.load_pipeline`
    gives a `BatchGenerationPipeline`.
    """

    card: ModelCard

    def generate(
        self,
        specs: TaskSpec,
        inputs: GenerationInputs | None = None,
        *,
        progress: Callable[[float, str], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> GenerationResult:
        """One request. Raises TaskSpecError when it cannot run with its inputs, and
        GenerationCancelled when `should_cancel()` turns True between two sampling steps."""
        ...


@runtime_checkable
class BatchGenerationPipeline(GenerationPipeline, Protocol):
    """A pipeline that also samples separate requests as one batch (what workers prefer)."""

    def generate_batch(
        self,
        specs: Sequence[TaskSpec],
        inputs: Sequence[GenerationInputs] | None = None,
        *,
        progress: Callable[[int, float, str], None] | None = None,
        should_cancel: Callable[[], Collection[int]] | None = None,
    ) -> list[GenerationResult | Exception]:
        """Each row's result, or the exception that ended it (TaskSpecError,
        GenerationCancelled) while the others go on. `progress(row, fraction, stage)`;
        `should_cancel()` returns the rows to drop."""
        ...
