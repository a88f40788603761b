"""Training data: the Shapes-AV world generated on the fly, or a JSONL file of videos decoded
through `models.media`, as `Example`s at a model card's size, frame rate and sample rate."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models import media
from models.conditioning import fit_length, fit_samples, resize_frames
from models.train.errors import TrainingError


@dataclass
class Example:
    frames: np.ndarray  # (T, H, W, 3) uint8 at the card's size and frame rate
    audio: np.ndarray  # (N,) float32 mono at the card's sample rate
    caption: str


# --captions: the Shapes-AV phrasing each caption style draws from (models/shapes_av.py)
CAPTION_STYLES = {"template": "train", "broad": "broad"}


class ShapesAVData:
    """The Shapes-AV world at a card's size: example i is the training clip of seed base + i.

    captions: "template" (the eight fixed templates every checkpoint so far trained on) or
    "broad" (`models.captions`: many colour names, verbs, style words). The clips are the same
    either way; only their captions differ. scale: frames at scale x the card's height and
    width, the same scene drawn at that resolution (the super-resolution stage's targets)."""

    def __init__(
        self,
        card,
        size: int = 1_000_000,
        seed: int = 0,
        captions: str = "template",
        scale: int = 1,
    ):
        if captions not in CAPTION_STYLES:
            raise TrainingError(f"--captions must be one of {', '.join(CAPTION_STYLES)}")
        self.card, self.size, self.seed, self.captions = card, size, seed, captions
        self.scale = scale

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> Example:
        from models import shapes_av

        h, w = self.card.height * self.scale, self.card.width * self.scale
        clip = shapes_av.generate_clip(
            self.seed + int(i),
            split="train",
            phrasing=CAPTION_STYLES[self.captions],
            resolution=max(h, w),
        )
        frames = resize_frames(clip.frames, h, w)
        return Example(frames, clip.audio, clip.caption)

    def caption(self, i: int) -> str:
        """Example i's caption without drawing its frames and audio (cheap)."""
        from models import shapes_av

        return shapes_av.make_caption(
            shapes_av.sample_clip_spec(self.seed + int(i), split="train"),
            CAPTION_STYLES[self.captions],
        )


class JsonlVideoData:
    """A JSONL file of {"video": path, "caption": text}; relative paths are from the file's folder.

    Each item is decoded (`models.media`, with a timeout) when asked for; a video with no
    audio gets silence.
    """

    def __init__(
        self, path: str | Path, card, timeout: float = media.DEFAULT_TIMEOUT, scale: int = 1
    ):
        self.path = Path(path)
        self.card, self.timeout, self.scale = card, timeout, scale
        self.items = []
        for n, line in enumerate(self.path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if "video" not in row:
                raise TrainingError(
                    f'{self.path}:{n}: each line needs a "video" path (and a "caption")'
                )
            video = Path(row["video"])
            self.items.append(
                (
                    video if video.is_absolute() else self.path.parent / video,
                    str(row.get("caption") or ""),
                )
            )
        if not self.items:
            raise TrainingError(f"{self.path} lists no videos")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Example:
        video, caption = self.items[int(i)]
        card = self.card
        try:
            frames = media.decode_frames(
                video,
                fps=card.fps,
                width=card.width * self.scale,
                height=card.height * self.scale,
                timeout=self.timeout,
            )
        except media.MediaError as exc:
            raise TrainingError(f"ffmpeg could not decode {video}: {exc}") from exc
        try:
            audio = media.decode_audio(video, sample_rate=card.sample_rate, timeout=self.timeout)
        except media.MediaTimeout as exc:
            raise TrainingError(f"ffmpeg could not decode the audio of {video}: {exc}") from exc
        except media.MediaError:  # no audio stream: silence
            audio = np.zeros(0, np.float32)
        n = round(len(frames) / card.fps * card.sample_rate)
        return Example(frames, fit_samples(audio, n), caption)


def open_data(spec: str, card, seed: int = 0, captions: str = "template", scale: int = 1):
    """`shapes-av`, `shapes-av:N` (its first N clips only) or a .jsonl path -> Examples.
    captions: the Shapes-AV caption style (a JSONL file's captions are its own); scale: frames
    at scale x the card's size."""
    if spec == "shapes-av":
        return ShapesAVData(card, seed=seed, captions=captions, scale=scale)
    if spec.startswith("shapes-av:") and spec.split(":", 1)[1].isdigit():
        n = int(spec.split(":", 1)[1])
        return ShapesAVData(card, size=n, seed=seed, captions=captions, scale=scale)
    if spec.endswith(".jsonl"):
        if captions != "template":
            raise TrainingError(
                f"--captions {captions} captions Shapes-AV clips; {spec} has its own captions"
            )
        return JsonlVideoData(spec, card, scale=scale)
    raise TrainingError(
        f'--data must be \'shapes-av[:N]\' or a .jsonl file of {{"video", "caption"}}; got {spec!r}'
    )


def clip_window(ex: Example, frames: int, card, rng: np.random.Generator) -> Example:
    """A random window of `frames` frames (held at the end if short) and its audio."""
    start = int(rng.integers(0, max(1, len(ex.frames) - frames + 1)))
    f = fit_length(ex.frames[start:], frames)
    s0 = round(start / card.fps * card.sample_rate)
    a = fit_samples(ex.audio[s0:], round(frames / card.fps * card.sample_rate))
    return Example(f, a, ex.caption)
