"""What a model makes, readable without torch: resolution, frame rate, clip length, audio rate.

The API process validates `size` and `seconds` against the card of the model it serves; the
pipeline reports the same card. A checkpoint folder's `config.json` carries it under "card";
the built-in presets are listed here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

# Where shipped checkpoints live: `models/checkpoints/<name>/config.json`.
CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"


@dataclass(frozen=True)
class ModelCard:
    name: str
    width: int
    height: int
    fps: float = 8.0
    clip_frames: int = 17  # 2.125 s at 8 fps: the paper's clip, 5 latent frames
    sample_rate: int = 16_000
    context_frames: int = 9  # long video: each step sees 1 + 8 frames (the causal first, 1 s)
    step_frames: int = 8  # new frames per continuation step
    max_seconds: float = 60.0
    # guidance when a request names none (1.0: off); a trained checkpoint's, from its eval runs
    guidance_scale: float = 1.0
    # the super-resolution stage's factor (models/super_resolution.py): 2 serves width x height
    # and twice it; 1: the LM's size alone
    sr_scale: int = 1

    @property
    def size(self) -> str:
        """OpenAI's `size` string of the LM's own output: width x height."""
        return f"{self.width}x{self.height}"

    @property
    def sizes(self) -> list[str]:
        """Every `size` the model serves, smallest first; the last is the default."""
        if self.sr_scale > 1:
            return [self.size, f"{self.width * self.sr_scale}x{self.height * self.sr_scale}"]
        return [self.size]

    @property
    def default_size(self) -> str:
        return self.sizes[-1]

    def upscales(self, size: str | None) -> bool:
        """Whether a request for `size` (None: the default) goes through super-resolution."""
        return (size or self.default_size) != self.size

    @property
    def clip_seconds(self) -> float:
        return self.clip_frames / self.fps

    def to_dict(self) -> dict:
        return asdict(self)


BUILTIN_CARDS: dict[str, ModelCard] = {
    "tiny": ModelCard(name="tiny", width=32, height=32),
    "demo": ModelCard(name="demo", width=64, height=64),
    "videopoet-1b": ModelCard(name="videopoet-1b", width=128, height=128),
    "videopoet-8b": ModelCard(name="videopoet-8b", width=128, height=128),
}


def resolve_checkpoint(name_or_path: str) -> Path | None:
    """The checkpoint folder for a name or path, or None for a preset built from scratch."""
    path = Path(name_or_path)
    if (path / "config.json").is_file():
        return path
    shipped = CHECKPOINT_DIR / name_or_path
    if (shipped / "config.json").is_file():
        return shipped
    return None


def load_card(name_or_path: str) -> ModelCard:
    """The card of a built-in preset, a shipped checkpoint or a checkpoint folder."""
    folder = resolve_checkpoint(name_or_path)
    if folder is not None:
        config = json.loads((folder / "config.json").read_text())
        return ModelCard(**config["card"])
    if name_or_path in BUILTIN_CARDS:
        return BUILTIN_CARDS[name_or_path]
    known = ", ".join(sorted(BUILTIN_CARDS))
    raise ValueError(
        f"unknown model {name_or_path!r}: give a preset ({known}) or a checkpoint folder "
        "holding config.json"
    )
