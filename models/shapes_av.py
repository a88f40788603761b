"""Shapes-AV: a synthetic audio-visual world where the right answer is known and measurable.

A clip is 17 frames of 64x64 RGB at 8 fps (2.125 s) with 2.125 s of 16 kHz mono audio. One
object (optionally two) of a shape, colour and size moves across a flat background. The
soundtrack follows what is seen:

- timbre by shape: circle -> sine, square -> square wave (odd harmonics), triangle -> sawtooth
  (all harmonics); band-limited additive synthesis, so every harmonic is below Nyquist;
- pitch by height: the higher the object in the frame, the higher the note (log scale,
  ~160 Hz at the bottom to ~1.2 kHz at the top), gliding with the object frame by frame;
- loudness by size: a large object is ~8 dB louder than a small one.

Everything is deterministic by seed and made in memory (numpy only, no torch, no files).
Captions come from several templates with synonyms and word-order variation; a second,
disjoint set of phrasings (`phrasing="heldout"`) is kept for evaluation, so a model that
memorised strings fails it. `phrasing="broad"` draws from the broad vocabulary of
`models.captions` (named colours, many verbs, style words; issue #34) instead. A fixed sixth of the (shape, colour, motion) combinations is held
out of training (`is_heldout`); every pair of attributes is still seen in training.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

FRAMES = 17  # 2.125 s at 8 fps: one clip of the demo card
FPS = 8.0
SIZE = 64  # frame height and width
SAMPLE_RATE = 16_000
SAMPLES = round(FRAMES / FPS * SAMPLE_RATE)  # 34,000

SHAPES = ("circle", "square", "triangle")
# Fully saturated hues 60 degrees apart, so a hue reading tells them apart even when blurred.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "yellow": (230, 230, 25),
    "green": (25, 230, 25),
    "cyan": (25, 230, 230),
    "blue": (25, 25, 230),
    "magenta": (230, 25, 230),
}
COLOUR_HUES = {
    "red": 0.0,
    "yellow": 60.0,
    "green": 120.0,
    "cyan": 180.0,
    "blue": 240.0,
    "magenta": 300.0,
}
# Unsaturated backgrounds: saturation alone separates the object from any of them.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (16, 16, 16),
    "gray": (118, 118, 118),
    "white": (236, 236, 236),
}
SIZES = {"small": 7.0, "large": 12.0}  # radius (half the bounding box) in pixels
MOTIONS = ("left", "right", "up", "down", "still", "diagonal")  # diagonal = up and to the right
TRAVEL = 24.0  # pixels moved over the clip (diagonal: 17 on each axis)
TIMBRES = {"circle": "sine", "square": "square", "triangle": "sawtooth"}
LOUDNESS = {"small": 0.07, "large": 0.18}  # RMS of the soundtrack
PITCH_LOW_HZ = 110.0  # frequency at height 0 (the bottom edge); 4 octaves up at the top


@dataclass(frozen=True)
class ObjectSpec:
    shape: str
    colour: str
    size: str
    motion: str
    x0: float  # centre at frame 0, pixels
    y0: float

    def centre(self, t: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Centre (x, y) at frame index t (fractional t allowed)."""
        dx, dy = motion_vector(self.motion)
        frac = np.asarray(t, dtype=np.float64) / (FRAMES - 1)
        return self.x0 + dx * frac, self.y0 + dy * frac


@dataclass(frozen=True)
class ClipSpec:
    objects: tuple[ObjectSpec, ...]
    background: str
    seed: int = 0

    @property
    def main(self) -> ObjectSpec:
        return self.objects[0]


@dataclass
class Clip:
    spec: ClipSpec
    frames: np.ndarray  # (17, 64, 64, 3) uint8
    audio: np.ndarray  # (34000,) float32 in [-1, 1]
    caption: str
    labels: dict = field(default_factory=dict)  # attributes of the main object, plus background


def motion_vector(motion: str) -> tuple[float, float]:
    """Total displacement (dx, dy) in pixels over the clip; y grows downwards."""
    d = TRAVEL / np.sqrt(2)
    return {
        "left": (-TRAVEL, 0.0),
        "right": (TRAVEL, 0.0),
        "up": (0.0, -TRAVEL),
        "down": (0.0, TRAVEL),
        "still": (0.0, 0.0),
        "diagonal": (d, -d),
    }[motion]


def is_heldout(shape: str, colour: str, motion: str) -> bool:
    """A fixed sixth of (shape, colour, motion) combinations never used in training.

    For every (shape, colour) pair exactly one motion is held out, so every pair of attribute
    values still appears in training: what is held out is the combination.
    """
    s, c, m = SHAPES.index(shape), list(COLOURS).index(colour), MOTIONS.index(motion)
    return (s + c + m) % 6 == 0


def height(y: np.ndarray | float) -> np.ndarray:
    """Height in the frame in [0, 1]: 1 at the top edge, 0 at the bottom."""
    return 1.0 - np.asarray(y, dtype=np.float64) / SIZE


def pitch_hz(y: np.ndarray | float) -> np.ndarray:
    """The note an object at vertical centre y sings: 4 octaves over the frame height."""
    return PITCH_LOW_HZ * 2.0 ** (4.0 * height(y))


# ---------------------------------------------------------------------------- sampling


def sample_object(rng: np.random.Generator, *, split: str = "train", **fixed) -> ObjectSpec:
    """A random object; attributes given in `fixed` are kept. split: train | heldout | any."""
    while True:
        shape = fixed.get("shape") or SHAPES[rng.integers(len(SHAPES))]
        colour = fixed.get("colour") or list(COLOURS)[rng.integers(len(COLOURS))]
        motion = fixed.get("motion") or MOTIONS[rng.integers(len(MOTIONS))]
        size = fixed.get("size") or list(SIZES)[rng.integers(len(SIZES))]
        held = is_heldout(shape, colour, motion)
        if split == "any" or held == (split == "heldout"):
            break
        if all(k in fixed for k in ("shape", "colour", "motion")):
            raise ValueError(f"{shape} {colour} {motion} is not in the {split} split")
    (xlo, xhi), (ylo, yhi) = start_box(size, motion)
    return ObjectSpec(
        shape, colour, size, motion, float(rng.uniform(xlo, xhi)), float(rng.uniform(ylo, yhi))
    )


def start_box(size: str, motion: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """((x_lo, x_hi), (y_lo, y_hi)): where an object of this size and motion starts (its centre
    in the first frame), so that its whole path stays inside the frame. Drawn uniformly."""
    margin = SIZES[size] + 2.0

    def span(d: float) -> tuple[float, float]:
        return margin - min(d, 0.0), SIZE - margin - max(d, 0.0)

    dx, dy = motion_vector(motion)
    return span(dx), span(dy)


def sample_clip_spec(
    seed: int, *, split: str = "train", two_objects: bool = False, **fixed
) -> ClipSpec:
    """The clip of `seed`: deterministic. `fixed` may set background and main-object attributes."""
    rng = np.random.default_rng(seed)
    background = fixed.pop("background", None) or list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    objects = [sample_object(rng, split=split, **fixed)]
    if two_objects:
        first = objects[0]
        others = [s for s in SHAPES if s != first.shape]
        colours = [c for c in COLOURS if c != first.colour]
        objects.append(
            sample_object(
                rng,
                split="any",
                shape=others[rng.integers(len(others))],
                colour=colours[rng.integers(len(colours))],
                size="small",
            )
        )
    return ClipSpec(tuple(objects), background, seed)


# ---------------------------------------------------------------------------- rendering

_SS = 4  # supersampling per axis: anti-aliased edges


def _coverage(shape: str, cx: float, cy: float, r: float, size: int = SIZE) -> np.ndarray:
    """(size, size) float coverage in [0, 1] of one shape centred at (cx, cy) with radius r,
    all in pixels of a `size`-pixel frame."""
    n = size * _SS
    coords = (np.arange(n) + 0.5) / _SS  # pixel-space sample positions
    x = coords[None, :] - cx
    y = coords[:, None] - cy
    if shape == "circle":
        inside = x * x + y * y <= r * r
    elif shape == "square":
        inside = (np.abs(x) <= r) & (np.abs(y) <= r)
    elif shape == "triangle":  # apex up, base at the bottom of the bounding box
        inside = (y <= r) & (y >= -r) & (np.abs(x) <= (y + r) / 2.0)
    else:
        raise ValueError(f"unknown shape {shape!r}; one of {SHAPES}")
    return inside.reshape(size, _SS, size, _SS).mean(axis=(1, 3))


def render_frames(spec: ClipSpec, resolution: int = SIZE) -> np.ndarray:
    """(17, resolution, resolution, 3) uint8: the objects over the background, later objects on top.

    One scene, any rasterization: positions, radii and travel are in units of the 64-pixel
    frame and scale with `resolution`, so a 128x128 render is the 64x64 one drawn at twice the
    resolution (its 2x2 means are the 64x64 pixels up to anti-aliasing at the edges)."""
    if resolution < 8:
        raise ValueError(f"resolution must be at least 8 pixels; got {resolution}")
    size = resolution
    k = size / SIZE
    frames = np.empty((FRAMES, size, size, 3), dtype=np.float32)
    frames[:] = np.array(BACKGROUNDS[spec.background], dtype=np.float32)
    for t in range(FRAMES):
        for obj in spec.objects:
            cx, cy = obj.centre(t)
            a = _coverage(obj.shape, float(cx) * k, float(cy) * k, SIZES[obj.size] * k, size)
            a = a[..., None]
            frames[t] = frames[t] * (1 - a) + np.array(COLOURS[obj.colour], np.float32) * a
    return np.round(frames).astype(np.uint8)


def _wave(timbre: str, phase: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Band-limited wave of `timbre` at instantaneous phase (radians) and frequency f (Hz)."""
    if timbre == "sine":
        return np.sin(phase)
    harmonics = range(1, 2 * 8, 2) if timbre == "square" else range(1, 9)
    out = np.zeros_like(phase)
    for k in harmonics:
        audible = (k * f < 0.45 * SAMPLE_RATE).astype(np.float64)
        out += audible * np.sin(k * phase) / k
    return out


def render_audio(spec: ClipSpec) -> np.ndarray:
    """(34000,) float32: one voice per object, pitch from its height, timbre from its shape."""
    t = np.arange(SAMPLES) / SAMPLE_RATE
    mix = np.zeros(SAMPLES, dtype=np.float64)
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.01)  # 10 ms ramps: no clicks
    for obj in spec.objects:
        _, y = obj.centre(np.clip(t * FPS, 0, FRAMES - 1))
        f = pitch_hz(y)
        phase = 2 * np.pi * np.cumsum(f) / SAMPLE_RATE
        wave = _wave(TIMBRES[obj.shape], phase, f)
        wave *= LOUDNESS[obj.size] / max(1e-9, float(np.sqrt(np.mean(wave**2))))
        mix += wave * fade
    return np.clip(mix, -1, 1).astype(np.float32)


# ---------------------------------------------------------------------------- captions


def _moves(
    *, first: list[str], verbs: tuple[str, ...], ends: tuple[str, ...], more: tuple[str, ...] = ()
) -> list[str]:
    """A motion's training phrases: `first` (the phrases of the first demo checkpoints, whose
    first one the word probes swap in), then every verb with every way to name the direction,
    then a few set phrases. Many verbs per direction teach the LM that the direction word
    decides the motion and the verb does not: with four fixed phrases per motion it moved the
    object the right way for 78 % of held-out captions in training phrasing and 50 % in the
    held-out phrasing."""
    composed = [f"{v} {e}" for v in verbs for e in ends]
    return list(dict.fromkeys(first + composed + list(more)))


_VERBS = ("moving", "going", "sliding", "drifting", "gliding", "shifting", "floating", "passing")
_TRAIN_WORDS = {
    "circle": ["circle", "ball", "disc", "round dot"],
    "square": ["square", "box", "block"],
    "triangle": ["triangle", "wedge", "pyramid shape"],
    "small": ["small", "little", "tiny", "mini", "compact"],
    "large": ["large", "big", "huge", "massive", "enormous"],
    "left": _moves(
        first=["moving left", "going to the left", "sliding left", "drifting leftwards"],
        verbs=_VERBS,
        ends=("left", "to the left", "leftwards"),
        more=("crossing from right to left",),
    ),
    "right": _moves(
        first=["moving right", "going to the right", "sliding right", "drifting rightwards"],
        verbs=_VERBS,
        ends=("right", "to the right", "rightwards"),
        more=("crossing from left to right",),
    ),
    "up": _moves(
        first=["moving up", "rising", "going upwards", "floating up"],
        verbs=_VERBS,
        ends=("up", "upwards", "higher"),
        more=("soaring", "lifting off"),
    ),
    "down": _moves(
        first=["moving down", "falling", "going downwards", "sinking"],
        verbs=_VERBS,
        ends=("down", "downwards", "lower"),
        more=("plunging", "coming down"),
    ),
    "still": [
        "staying still",
        "not moving",
        "resting in place",
        "standing still",
        "holding still",
        "keeping still",
        "sitting still",
        "frozen in place",
        "at rest",
        "staying put",
    ],
    "diagonal": _moves(
        first=["moving up and to the right", "rising to the right", "going diagonally up right"],
        verbs=_VERBS,
        ends=("up and to the right", "up and right", "up to the right"),
    ),
}
_TRAIN_TEMPLATES = [
    "a {size} {colour} {shape} {motion} on a {bg} background",
    "a {colour} {shape}, {size}, {motion} over {bg}",
    "{motion}: a {size} {colour} {shape} against {bg}",
    "on a {bg} background, a {size} {colour} {shape} is {motion}",
    "{size} {colour} {shape} {motion}",
    "a {colour} {size} {shape} {motion}, {bg} backdrop",
    "the {bg} frame shows a {size} {colour} {shape} {motion}",
    "a {shape}, {colour} and {size}, is {motion} in front of {bg}",
]
# Evaluation only: synonyms and word orders never used by the training captions.
_HELDOUT_WORDS = {
    "circle": ["round circle", "orb"],
    "square": ["cube-like square", "square tile"],
    "triangle": ["three-sided triangle", "triangular shape"],
    "small": ["smallish", "petite"],
    "large": ["large-sized", "giant"],
    "left": ["heading to the left side", "travelling left"],
    "right": ["heading to the right side", "travelling right"],
    "up": ["ascending", "climbing upward"],
    "down": ["descending", "dropping downward"],
    "still": ["motionless", "completely stationary"],
    "diagonal": ["climbing diagonally towards the upper right", "heading to the top right corner"],
}
_HELDOUT_TEMPLATES = [
    "there is one {colour} {shape} of {size} size, {motion}, with a {bg} colored background",
    "video of a {shape} that is {colour} and {size}, {motion}; the background is {bg}",
]


def reword(text: str, value: str, new_value: str) -> str:
    """A training caption with the phrase for attribute `value` ("moving left", "ball", "red")
    replaced by `new_value`'s first phrase; for probes that change one attribute's words."""
    for phrase in sorted(_TRAIN_WORDS.get(value, [value]), key=len, reverse=True):
        if phrase in text:
            return text.replace(phrase, _TRAIN_WORDS.get(new_value, [new_value])[0], 1)
    raise ValueError(f"no words for {value!r} in {text!r}")


PHRASINGS = ("train", "heldout", "broad")


def caption(
    spec: ClipSpec,
    rng: np.random.Generator,
    phrasing: str = "train",
    words: dict[str, list[str]] | None = None,
) -> str:
    """A caption of the clip. `phrasing`: "train", the eight training templates (what every
    checkpoint so far trained on); "heldout", only evaluation phrasings; "broad", the broad
    training vocabulary of `models.captions` (many colour names, verbs, style words).

    `words` replaces the phrases of attribute values ({"red": ["crimson"], "left": [...]}) in
    the train or heldout phrasing, for the eval's held-out-word rows; a colour is otherwise
    its own name.
    """
    if phrasing == "broad":
        from models import captions

        return captions.caption(spec, rng)
    if phrasing not in PHRASINGS:
        raise ValueError(f"phrasing must be one of {PHRASINGS}, not {phrasing!r}")
    base, templates = (
        (_TRAIN_WORDS, _TRAIN_TEMPLATES)
        if phrasing == "train"
        else (_HELDOUT_WORDS, _HELDOUT_TEMPLATES)
    )
    words = {**base, **(words or {})}

    def pick(options):
        return options[rng.integers(len(options))]

    def describe(obj: ObjectSpec, template: str, bg: str) -> str:
        size, shape, motion = (pick(words[v]) for v in (obj.size, obj.shape, obj.motion))
        # a colour is drawn last and only when replaced: the captions of every earlier run stay
        # as they were, and one with a replaced colour keeps their other words
        colour = pick(words[obj.colour]) if obj.colour in words else obj.colour
        return template.format(size=size, colour=colour, shape=shape, motion=motion, bg=bg)

    template = pick(templates)
    text = describe(spec.main, template, spec.background)
    for obj in spec.objects[1:]:
        text += " and a " + describe(obj, "{size} {colour} {shape} {motion}", spec.background)
    return text


# ---------------------------------------------------------------------------- clips


def labels(spec: ClipSpec) -> dict:
    obj = spec.main
    return {
        "shape": obj.shape,
        "colour": obj.colour,
        "size": obj.size,
        "motion": obj.motion,
        "background": spec.background,
        "timbre": TIMBRES[obj.shape],
    }


def make_caption(spec: ClipSpec, phrasing: str = "train") -> str:
    """The caption `make_clip` gives the clip, without rendering it."""
    rng = np.random.default_rng([spec.seed, 1])  # caption choices: a stream apart from layout
    return caption(spec, rng, phrasing)


def make_clip(spec: ClipSpec, phrasing: str = "train", resolution: int = SIZE) -> Clip:
    """The clip of a scene, its frames rendered at `resolution` x `resolution` pixels."""
    frames = render_frames(spec, resolution)
    return Clip(spec, frames, render_audio(spec), make_caption(spec, phrasing), labels(spec))


def generate_clip(
    seed: int,
    *,
    split: str = "train",
    phrasing: str = "train",
    two_objects: bool = False,
    resolution: int = SIZE,
    **fixed,
) -> Clip:
    """The clip of `seed` in `split` (train | heldout | any): same seed, same clip (and the
    same scene at every `resolution`; `fixed` pins object attributes: shape, size, ...)."""
    return make_clip(
        sample_clip_spec(seed, split=split, two_objects=two_objects, **fixed), phrasing, resolution
    )


def restyle(spec: ClipSpec, rng: np.random.Generator) -> ClipSpec:
    """The same motion, place, shape and size with another colour and background (stylize)."""
    obj = spec.main
    colour = [c for c in COLOURS if c != obj.colour][rng.integers(len(COLOURS) - 1)]
    bg = [b for b in BACKGROUNDS if b != spec.background][rng.integers(len(BACKGROUNDS) - 1)]
    return replace(spec, objects=(replace(obj, colour=colour),) + spec.objects[1:], background=bg)


def heldout_specs(n: int, seed: int = 12345) -> list[ClipSpec]:
    """n evaluation clips over the held-out combinations, cycling through them evenly."""
    combos = [(s, c, m) for s in SHAPES for c in COLOURS for m in MOTIONS if is_heldout(s, c, m)]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(combos))
    specs = []
    for i in range(n):
        s, c, m = combos[order[i % len(combos)]]
        specs.append(
            sample_clip_spec(seed * 1000 + i, split="heldout", shape=s, colour=c, motion=m)
        )
    return specs
