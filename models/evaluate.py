"""Evaluate a model on held-out Shapes-AV combinations, from generated pixels and samples.

`python -m models.evaluate --model DIR_OR_NAME [--n N]` (the CLI's `videopoet eval`) prints one
table: per task, each metric measured on what the model generated, beside what chance gives
and what the same analyser reads off the true clips (the analyser's own ceiling).

Nothing here reads tokens or labels of the output: simple analysers look at the pixels and the
waveform.
- colour: the dominant hue of the saturated (non-background) pixels, nearest of the 6 hues;
- shape: fill ratio of the object's bounding box (triangle 1/2, circle pi/4, square 1);
- size: the bounding box side; motion: the track of the object's centroid;
- timbre: the strength of the 2nd and 3rd harmonics against the fundamental
  (sine: neither, square: only odd, sawtooth: both);
- pitch: the dominant frequency of each frame-long window of audio.
Chance: 1 / classes for accuracies; for PSNR and correlation, the score of an unrelated clip of
the world in place of the output.

The clips are held-out (shape, colour, motion) combinations, captioned in phrasings training
never uses. The held-out-word rows (`--tasks words`) prompt text_to_video on the same clips with
the same seeds, each caption changed in one thing (`models.captions`): the colour named by a
training colour name other than the world's six words, or by a held-out name; the motion in a
held-out phrasing, then with held-out style words around that same caption.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np

from models import shapes_av as av

log = logging.getLogger(__name__)

# In pixels of a 64-pixel-wide frame: the analysers measure any frame size in those units, so
# that one threshold reads a 64x64 and a 128x128 video alike.
MIN_OBJECT_PIXELS = 12  # fewer saturated pixels than this: no object in the frame
STILL_PX = 6.0  # centroid travel below this (of the 24 px a moving object covers): still

# ---------------------------------------------------------------------------- video analysers


def object_mask(frame: np.ndarray) -> np.ndarray:
    """(H, W) bool: saturated, not-dark pixels. Backgrounds are grey, objects fully saturated."""
    hsv = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2HSV)
    return (hsv[..., 1] > 110) & (hsv[..., 2] > 60)


def _largest_component(mask: np.ndarray) -> np.ndarray | None:
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[best, cv2.CC_STAT_AREA] < MIN_OBJECT_PIXELS * (mask.shape[1] / av.SIZE) ** 2:
        return None
    return lab == best


def dominant_colour(frames: np.ndarray) -> str | None:
    """The colour name whose hue is nearest the saturated pixels' mean hue (circular)."""
    frames = np.asarray(frames).reshape(-1, *np.asarray(frames).shape[-3:])
    hues = []
    for f in frames:
        m = object_mask(f)
        if m.sum() >= MIN_OBJECT_PIXELS:
            hsv = cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2HSV)
            hues.append(hsv[..., 0][m].astype(np.float64) * 2.0)  # OpenCV hue is degrees / 2
    if not hues:
        return None
    h = np.deg2rad(np.concatenate(hues))
    # the hue histogram's peak, not the mean: a stray second colour must not average in
    hist = np.histogram(np.rad2deg(h) % 360, bins=36, range=(0, 360))[0]
    centre = (np.argmax(hist) + 0.5) * 10.0
    near = np.abs((np.rad2deg(h) - centre + 180) % 360 - 180) < 30
    mean = np.rad2deg(np.angle(np.exp(1j * h[near]).mean())) % 360
    return min(av.COLOUR_HUES, key=lambda c: abs((av.COLOUR_HUES[c] - mean + 180) % 360 - 180))


@dataclass
class Track:
    """The object's per-frame geometry; NaN where no object was found."""

    cx: np.ndarray
    cy: np.ndarray
    fill: np.ndarray  # area / bounding-box area
    side: np.ndarray  # larger side of the bounding box, pixels

    @property
    def found(self) -> np.ndarray:
        return ~np.isnan(self.cx)


def track(frames: np.ndarray) -> Track:
    """Positions and sides in pixels of a 64-pixel-wide frame, whatever the frames' size."""
    n = len(frames)
    cx, cy, fill, side = (np.full(n, np.nan) for _ in range(4))
    unit = av.SIZE / frames.shape[2] if n else 1.0
    for t, f in enumerate(frames):
        comp = _largest_component(object_mask(f))
        if comp is None:
            continue
        ys, xs = np.nonzero(comp)
        w, h = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
        cx[t], cy[t] = (xs.mean() + 0.5) * unit, (ys.mean() + 0.5) * unit
        fill[t] = comp.sum() / float(w * h)
        side[t] = max(w, h) * unit
    return Track(cx, cy, fill, side)


def classify_shape(frames: np.ndarray) -> str | None:
    tr = track(np.asarray(frames).reshape(-1, *np.asarray(frames).shape[-3:]))
    if not tr.found.any():
        return None
    fill = float(np.median(tr.fill[tr.found]))
    return "triangle" if fill < 0.64 else "circle" if fill < 0.89 else "square"


def classify_size(frames: np.ndarray) -> str | None:
    tr = track(np.asarray(frames).reshape(-1, *np.asarray(frames).shape[-3:]))
    if not tr.found.any():
        return None
    return "small" if float(np.median(tr.side[tr.found])) < 19.5 else "large"


def displacement(frames: np.ndarray) -> tuple[float, float] | None:
    """(dx, dy) of the centroid from the first frames to the last; None if the object is lost."""
    tr = track(frames)
    ok = np.nonzero(tr.found)[0]
    if len(ok) < max(2, len(frames) // 2):
        return None
    head, tail = ok[: max(1, len(ok) // 5)], ok[-max(1, len(ok) // 5) :]
    scale = (len(frames) - 1) / max(1.0, float(tail.mean() - head.mean()))  # to whole-clip travel
    dx = (tr.cx[tail].mean() - tr.cx[head].mean()) * scale
    dy = (tr.cy[tail].mean() - tr.cy[head].mean()) * scale
    return float(dx), float(dy)


def classify_motion(frames: np.ndarray) -> str | None:
    d = displacement(frames)
    return None if d is None else motion_name(*d)


def motion_name(dx: float, dy: float) -> str:
    """A whole-clip displacement (pixels, y down) -> left, right, up, down, still or diagonal."""
    dist = math.hypot(dx, dy)
    if dist < STILL_PX:
        return "still"
    if dx > 0.4 * dist and -dy > 0.4 * dist:
        return "diagonal"
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def vertical_motion(motion: str | None) -> str | None:
    """up / down / level: what the pitch of a soundtrack can tell about a motion."""
    if motion is None:
        return None
    return {"up": "up", "diagonal": "up", "down": "down"}.get(motion, "level")


def classify_background(frames: np.ndarray) -> str:
    f = np.asarray(frames).reshape(-1, *np.asarray(frames).shape[-3:]).astype(np.float32)
    border = np.concatenate([f[:, 0], f[:, -1], f[:, :, 0], f[:, :, -1]]).reshape(-1, 3)
    med = np.median(border, axis=0)
    return min(av.BACKGROUNDS, key=lambda b: float(np.linalg.norm(med - av.BACKGROUNDS[b])))


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return 99.0 if mse <= 1e-12 else 10 * math.log10(peak * peak / mse)


# ---------------------------------------------------------------------------- audio analysers

_WINDOW = 1024  # 64 ms at 16 kHz
_NFFT = 8192


def _frame_spectra(
    audio: np.ndarray, frames: int = av.FRAMES, fps: float = av.FPS, sr: int = av.SAMPLE_RATE
) -> tuple[np.ndarray, np.ndarray]:
    """Magnitude spectra (frames, NFFT/2+1) of windows centred on each video frame's time."""
    audio = np.asarray(audio, np.float64)
    pad = np.pad(audio, (_WINDOW, _WINDOW))
    win = np.hanning(_WINDOW)
    specs = []
    for k in range(frames):
        centre = round(min(k / fps, (len(audio) - 1) / sr) * sr) + _WINDOW
        centre = min(max(centre, _WINDOW + _WINDOW // 2), len(audio) + _WINDOW // 2)
        seg = pad[centre - _WINDOW // 2 : centre + _WINDOW // 2] * win
        specs.append(np.abs(np.fft.rfft(seg, _NFFT)))
    return np.array(specs), np.fft.rfftfreq(_NFFT, 1.0 / sr)


def frame_pitch(audio: np.ndarray, sr: int = av.SAMPLE_RATE) -> np.ndarray:
    """Dominant frequency (Hz) per video frame, 60 Hz - 2.5 kHz; NaN where (near) silent."""
    specs, freqs = _frame_spectra(audio, sr=sr)
    band = (freqs >= 60) & (freqs <= 2500)
    out = np.full(len(specs), np.nan)
    floor = 1e-3 * _WINDOW / 4  # amplitude ~1e-3 at the peak
    for k, s in enumerate(specs):
        i = np.argmax(np.where(band, s, 0))
        if s[i] > floor:
            out[k] = freqs[i]
    return out


def _peak(spectrum: np.ndarray, f: float, df: float) -> float:
    """The largest magnitude within +-4 % of frequency f."""
    lo, hi = int((f * 0.96) / df), math.ceil(f * 1.04 / df) + 1
    return float(spectrum[lo:hi].max()) if hi <= len(spectrum) and lo < hi else 0.0


def harmonic_ratios(audio: np.ndarray) -> tuple[float, float]:
    """Median over frames of |2nd| / |1st| and |3rd| / |1st| harmonic amplitudes."""
    specs, freqs = _frame_spectra(audio)
    f0 = frame_pitch(audio)
    r2, r3 = [], []
    df = freqs[1]
    for s, f in zip(specs, f0):
        if np.isnan(f):
            continue

        a1 = _peak(s, f, df)
        if a1 <= 0:
            continue
        r2.append(_peak(s, 2 * f, df) / a1)
        r3.append(_peak(s, 3 * f, df) / a1)
    if not r2:
        return float("nan"), float("nan")
    return float(np.median(r2)), float(np.median(r3))


def classify_timbre(audio: np.ndarray) -> str | None:
    r2, r3 = harmonic_ratios(audio)
    if np.isnan(r2):
        return None
    if max(r2, r3) < 0.12:
        return "sine"
    return "sawtooth" if r2 > 0.6 * r3 else "square"


def classify_loudness(audio: np.ndarray) -> str:
    """small / large: the soundtrack's RMS against the midpoint (geometric) of the two levels."""
    rms = float(np.sqrt(np.mean(np.asarray(audio, np.float64) ** 2)))
    return "large" if rms > math.sqrt(av.LOUDNESS["small"] * av.LOUDNESS["large"]) else "small"


def pitch_correlation(audios: list[np.ndarray], specs: list[av.ClipSpec]) -> float:
    """Pearson correlation, pooled over clips and frames, of log pitch and the object's height."""
    xs, ys = [], []
    for audio, spec in zip(audios, specs):
        p = frame_pitch(audio)
        _, cy = spec.main.centre(np.arange(av.FRAMES))
        ok = ~np.isnan(p)
        xs.append(np.log2(p[ok]))
        ys.append(av.height(cy)[ok])
    x, y = np.concatenate(xs), np.concatenate(ys)
    if len(x) < 3 or x.std() < 1e-9 or y.std() < 1e-9:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def audio_psnr(ref: np.ndarray, out: np.ndarray) -> float:
    """PSNR of a waveform against its reference, peak = the reference's largest |sample|."""
    n = min(len(ref), len(out))
    peak = float(np.abs(ref[:n]).max())
    return psnr(ref[:n], out[:n], peak=max(peak, 1e-6))


# ---------------------------------------------------------------------------- the eval


@dataclass
class Row:
    task: str
    metric: str
    value: float
    chance: float
    truth: float | None = None  # the analyser on the true clips: its ceiling
    target: str = ""
    unit: str = "%"  # "%" accuracies are stored as fractions

    def cells(self) -> list[str]:
        def fmt(v):
            if v is None:
                return "-"
            return (
                f"{100 * v:.0f} %"
                if self.unit == "%"
                else f"{v:.2f}{' ' + self.unit if self.unit else ''}"
            )

        return [
            self.task,
            self.metric,
            fmt(self.value),
            fmt(self.chance),
            fmt(self.truth),
            self.target,
        ]


def _acc(pred: list, true: list) -> float:
    return float(np.mean([p == t for p, t in zip(pred, true)])) if true else float("nan")


def _unrelated(clips: list, k: int = 1) -> list:
    """Each clip paired with another one of the set (the chance baseline for PSNR rows)."""
    return [clips[(i + k) % len(clips)] for i in range(len(clips))]


def _box_pixels(frames: np.ndarray, inside: bool) -> np.ndarray:
    """The pixels inside (or outside) the default mask box of a (T, H, W, 3) clip."""
    from models.conditioning import default_box

    H, W = frames.shape[1:3]
    x0, y0, x1, y1 = default_box(H, W)
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return frames[:, m if inside else ~m]


def tokenizers_only(model: str, device: str):
    """What the tokenizer rows use of a pipeline (card, device, both tokenizers), loaded from a
    checkpoint folder that may not hold an LM yet; a preset builds the full pipeline."""
    from types import SimpleNamespace

    from models.card import resolve_checkpoint
    from models.pipeline import ModelConfig, load_pipeline, load_tokenizers

    folder = resolve_checkpoint(model)
    if folder is None:
        return load_pipeline(model, device=device)
    config = ModelConfig.from_dict(json.loads((folder / "config.json").read_text()))
    video, audio = load_tokenizers(folder, config)
    return SimpleNamespace(
        card=config.card,
        device=device,
        video_tokenizer=video.to(device),
        audio_tokenizer=audio.to(device),
    )


class _Timings:
    """The clock `Pipeline.upscale` reports to, kept."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


def sr_pixels(pipe) -> int | None:
    """The side of the SR stage's square output (128 for the demo), or None without one."""
    sr = getattr(pipe, "sr", None)
    if sr is None or pipe.card.width != pipe.card.height:
        return None
    return pipe.card.width * sr.config.scale


def sr_rows(pipe, specs, clips, unrelated, seed: int) -> list[Row]:
    """The SR stage from the codes of the true clips at the LM's size: PSNR against the true
    render at its size, beside the same codes decoded at the LM's size and resized (the decoder
    alone), the true render through the tokenizer at the larger size (the ceiling) and an
    unrelated clip (chance); shape read off each; and the time the stage adds to a video."""
    import time as clock

    from models.conditioning import resize_frames
    from models.spec import Task, TaskSpec

    size = cast(int, sr_pixels(pipe))
    truths = [av.render_frames(sp, size) for sp in specs]
    sr_out, plain = [], []
    for i, c in enumerate(clips):
        sr_out.append(pipe.upscale(c.frames, c.caption, seed * 1000 + i, _Timings()))
        small = round_trip_video(pipe.video_tokenizer, c.frames, pipe.device)
        plain.append(resize_frames(small, size, size))
    ceiling = [round_trip_video(pipe.sr_video_tokenizer, t, pipe.device) for t in truths]
    labels = [c.labels for c in clips]
    name = f"super_resolution {size}x{size}"

    def mean_psnr(outs) -> float:
        return float(np.mean([psnr(t, o) for t, o in zip(truths, outs)]))

    chance = mean_psnr([truths[(i + 1) % len(truths)] for i in range(len(truths))])
    rows = [
        Row(name, "PSNR, SR from the true codes", mean_psnr(sr_out), chance, None, "", "dB"),
        Row(name, "PSNR, decoder alone (resized)", mean_psnr(plain), chance, None, "", "dB"),
        Row(name, "PSNR, tokenizer at this size", mean_psnr(ceiling), chance, None, "", "dB"),
    ]
    for metric, outs in (
        ("shape, SR", sr_out),
        ("shape, decoder alone", plain),
        ("shape, tokenizer at this size", ceiling),
    ):
        rows.append(
            Row(
                name,
                metric,
                _acc([classify_shape(f) for f in outs], [lab["shape"] for lab in labels]),
                1 / 3,
                _acc([classify_shape(t) for t in truths], [lab["shape"] for lab in labels]),
            )
        )
    # seconds of a video alone at each size (the first few captions, after one untimed run of
    # each): what the stage adds
    base = big = 0.0
    for i, c in enumerate(clips[:5]):
        spec = TaskSpec(task=Task.text_to_video, prompt=c.caption, seed=seed * 1000 + i)
        for z in (pipe.card.size, f"{size}x{size}"):
            t0 = clock.perf_counter()
            pipe.generate(spec.model_copy(update={"size": z}))
            spent = clock.perf_counter() - t0
            if i == 0:
                continue
            if z == pipe.card.size:
                base += spent
            else:
                big += spent
    added = big / base - 1 if base else float("nan")
    rows.append(Row(name, "time added to a video", added, 0.0, None, "<= 40 %"))
    return rows


def round_trip_video(tokenizer, frames: np.ndarray, device="cpu") -> np.ndarray:
    """uint8 frames (T, H, W, 3) through encode -> decode: what the tokenizer keeps of them."""
    import torch

    from models.video_tokenizer import VideoTokenizer

    with torch.inference_mode():
        x = VideoTokenizer.frames_to_tensor(frames).to(device)
        return VideoTokenizer.tensor_to_frames(tokenizer.decode(tokenizer.encode(x)))[0]


def round_trip_audio(tokenizer, audio: np.ndarray, device="cpu") -> np.ndarray:
    """float32 mono samples through encode -> decode."""
    import torch

    with torch.inference_mode():
        a = torch.from_numpy(audio)[None].to(device)
        return tokenizer.decode(tokenizer.encode(a))[0].float().cpu().numpy()


# The held-out-word rows (`--tasks words`): (eval_caption's words, metric, label, target).
WORD_ROWS = (
    ("train_colour", "colour, training colour names", "colour", ">= 90 %"),
    ("heldout_colour", "colour, held-out colour names", "colour", ">= 50 %"),
    ("heldout_motion", "motion, held-out phrasings", "motion", ">= 75 %"),
    ("heldout_motion_style", "motion, + held-out style words", "motion", "-5 pts at most"),
)


def run_eval(
    model: str = "demo",
    n: int = 24,
    *,
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int | None = None,
    guidance: float | None = None,
    device: str = "cpu",
    tasks: list[str] | None = None,
    quantize: str = "none",
    sr_guidance: float | None = None,
) -> list[Row]:
    """Generate on n held-out clips per task and measure the outputs. Returns the table rows.

    guidance None: the model card's default, what a request naming none gets from the service.
    quantize: the LM's weights as the service's VIDEOPOET_QUANTIZE would keep them.
    sr_guidance: the SR stage's classifier-free guidance scale in place of the one its config
    serves (`super_resolution.guidance` in config.json); None: that one.
    """
    from models.conditioning import resize_frames
    from models.pipeline import GenerationInputs, load_pipeline
    from models.spec import Task, TaskSpec

    want = set(tasks) if tasks else None
    # the tokenizers alone score mid-training, before the folder holds an LM
    pipe = (
        tokenizers_only(model, device)
        if want == {"tokenizers"}
        else load_pipeline(model, device=device, quantize=quantize)
    )
    card = pipe.card
    if sr_guidance is not None and getattr(pipe, "sr", None) is not None:
        pipe.sr.config.guidance = sr_guidance
    specs = av.heldout_specs(n, seed=12345 + seed)
    rng = np.random.default_rng(seed)
    clips = [av.make_clip(s, phrasing="heldout") for s in specs]
    # the true clips at the model's size: what the analysers compare against
    for c in clips:
        c.frames = resize_frames(c.frames, card.height, card.width)
    labels = [c.labels for c in clips]
    unrelated = _unrelated(clips)
    rows: list[Row] = []
    if guidance is None:
        guidance = card.guidance_scale
    # every task at the LM's own size; the SR stage's rows upscale those same videos
    sampling = {
        "temperature": temperature,
        "top_k": top_k,
        "guidance_scale": guidance,
        "size": card.size,
    }

    def gen(task: Task, prompts, inputs, size: str = card.size):
        t0 = time.perf_counter()
        out = pipe.generate(
            [
                TaskSpec(task=task, prompt=p, seed=seed * 1000 + i, **{**sampling, "size": size})
                for i, p in enumerate(prompts)
            ],
            inputs,
        )
        log.info("%s: %d samples in %.1f s", task.value, len(prompts), time.perf_counter() - t0)
        return out

    def on(task: str) -> bool:
        return want is None or task in want

    truth_motion = _acc(
        [classify_motion(c.frames) for c in clips], [lab["motion"] for lab in labels]
    )

    # ---- tokenizers: reconstruction through encode -> decode
    if on("tokenizers"):
        rec = [round_trip_video(pipe.video_tokenizer, c.frames, pipe.device) for c in clips]
        arec = [round_trip_audio(pipe.audio_tokenizer, c.audio, pipe.device) for c in clips]
        rows.append(
            Row(
                "video tokenizer",
                "reconstruction PSNR",
                float(np.mean([psnr(c.frames, r) for c, r in zip(clips, rec)])),
                float(np.mean([psnr(c.frames, u.frames) for c, u in zip(clips, unrelated)])),
                None,
                ">= 30 dB",
                "dB",
            )
        )
        # what the analysers still read through the tokenizer: the ceiling of any generated clip
        for metric, fn, key, chance in (
            ("colour", dominant_colour, "colour", 1 / 6),
            ("shape", classify_shape, "shape", 1 / 3),
            ("size", classify_size, "size", 1 / 2),
            ("motion", classify_motion, "motion", 1 / 6),
        ):
            rows.append(
                Row(
                    "video tokenizer",
                    f"{metric} kept",
                    _acc([fn(r) for r in rec], [lab[key] for lab in labels]),
                    chance,
                    _acc([fn(c.frames) for c in clips], [lab[key] for lab in labels]),
                )
            )
        rows.append(
            Row(
                "audio tokenizer",
                "reconstruction PSNR",
                float(np.mean([audio_psnr(c.audio, r) for c, r in zip(clips, arec)])),
                float(np.mean([audio_psnr(c.audio, u.audio) for c, u in zip(clips, unrelated)])),
                None,
                "",
                "dB",
            )
        )
        rows.append(
            Row(
                "audio tokenizer",
                "timbre kept",
                _acc([classify_timbre(a) for a in arec], [lab["timbre"] for lab in labels]),
                1 / 3,
                _acc([classify_timbre(c.audio) for c in clips], [lab["timbre"] for lab in labels]),
            )
        )

    # ---- text_to_video / text_to_image
    if on("text_to_video"):
        out = gen(Task.text_to_video, [c.caption for c in clips], None)
        frames = [r.frames for r in out]
        for metric, fn, key, chance, target in (
            ("colour", dominant_colour, "colour", 1 / 6, ">= 90 %"),
            ("shape", classify_shape, "shape", 1 / 3, ">= 85 %"),
            ("size", classify_size, "size", 1 / 2, ""),
            ("motion", classify_motion, "motion", 1 / 6, ">= 85 %"),
            ("background", classify_background, "background", 1 / 3, ""),
        ):
            truth = _acc([fn(c.frames) for c in clips], [lab[key] for lab in labels])
            rows.append(
                Row(
                    "text_to_video",
                    f"{metric} accuracy",
                    _acc([fn(f) for f in frames], [lab[key] for lab in labels]),
                    chance,
                    truth,
                    target,
                )
            )
        # ... and the same requests at the SR stage's size: what a request of the default size
        # gets (the same LM codes, one seed, handed to the stage as they are)
        sr_size = sr_pixels(pipe)
        if sr_size:
            out = gen(Task.text_to_video, [c.caption for c in clips], None, f"{sr_size}x{sr_size}")
            big = [r.frames for r in out]
            truths = [av.render_frames(sp, sr_size) for sp in specs]
            for metric, fn, key, chance, target in (
                ("colour", dominant_colour, "colour", 1 / 6, ">= 95 %"),
                ("shape", classify_shape, "shape", 1 / 3, ">= 70 %"),
                ("size", classify_size, "size", 1 / 2, ""),
                ("motion", classify_motion, "motion", 1 / 6, ">= the 64x64 row"),
            ):
                rows.append(
                    Row(
                        f"text_to_video {sr_size}x{sr_size}",
                        f"{metric} accuracy",
                        _acc([fn(f) for f in big], [lab[key] for lab in labels]),
                        chance,
                        _acc([fn(f) for f in truths], [lab[key] for lab in labels]),
                        target,
                    )
                )
    # ---- the super-resolution stage on the true clips' codes: what it adds over the decoder
    if on("super_resolution") and sr_pixels(pipe):
        rows += sr_rows(pipe, specs, clips, unrelated, seed)
    # ---- held-out words (issue #34): the text_to_video clips and sampling seeds again, each
    # caption changed in one thing only (models.captions.eval_caption): the colour named by a
    # training name other than the world's own word, or by a held-out name; the motion in a
    # held-out phrasing; and that caption with held-out style words around it (what they cost
    # is its gap to the row before)
    if on("words"):
        from models import captions

        for words, metric, key, target in WORD_ROWS:
            prompts = [
                captions.eval_caption(s, np.random.default_rng([s.seed, 1]), words) for s in specs
            ]
            out = gen(Task.text_to_video, prompts, None)
            fn = dominant_colour if key == "colour" else classify_motion
            rows.append(
                Row(
                    "text_to_video",
                    metric,
                    _acc([fn(r.frames) for r in out], [lab[key] for lab in labels]),
                    1 / 6,
                    _acc([fn(c.frames) for c in clips], [lab[key] for lab in labels]),
                    target,
                )
            )
    if on("text_to_image"):
        out = gen(Task.text_to_image, [c.caption for c in clips], None)
        for metric, fn, chance in (
            ("colour", dominant_colour, 1 / 6),
            ("shape", classify_shape, 1 / 3),
        ):
            rows.append(
                Row(
                    "text_to_image",
                    f"{metric} accuracy",
                    _acc([fn(r.frames) for r in out], [lab[metric] for lab in labels]),
                    chance,
                    _acc([fn(c.frames[:1]) for c in clips], [lab[metric] for lab in labels]),
                )
            )

    # ---- image_to_video: the image is the clip's first frame, the prompt names the motion
    if on("image_to_video"):
        out = gen(
            Task.image_to_video,
            [c.caption for c in clips],
            [GenerationInputs(image=c.frames[0]) for c in clips],
        )
        rows.append(
            Row(
                "image_to_video",
                "first-frame PSNR",
                float(np.mean([psnr(c.frames[0], r.frames[0]) for c, r in zip(clips, out)])),
                float(np.mean([psnr(c.frames[0], u.frames[0]) for c, u in zip(clips, unrelated)])),
                None,
                "",
                "dB",
            )
        )
        rows.append(
            Row(
                "image_to_video",
                "motion accuracy",
                _acc([classify_motion(r.frames) for r in out], [lab["motion"] for lab in labels]),
                1 / 6,
                truth_motion,
            )
        )

    # ---- continuation: the first 9 frames in, 8 new ones out; the motion must carry on
    if on("continuation"):
        ctx = card.context_frames
        out = gen(
            Task.continuation,
            [c.caption for c in clips],
            [GenerationInputs(video=c.frames[:ctx], video_fps=card.fps) for c in clips],
        )
        new = [r.frames[ctx - 1 :] for r in out]  # the last input frame and the new ones
        rows.append(
            Row(
                "continuation",
                "motion kept (new frames)",
                _acc([classify_motion(f) for f in new], [lab["motion"] for lab in labels]),
                1 / 6,
                _acc(
                    [classify_motion(c.frames[ctx - 1 :]) for c in clips],
                    [lab["motion"] for lab in labels],
                ),
            )
        )
        rows.append(
            Row(
                "continuation",
                "new-frame PSNR",
                float(np.mean([psnr(c.frames[ctx:], r.frames[ctx:]) for c, r in zip(clips, out)])),
                float(
                    np.mean(
                        [psnr(c.frames[ctx:], u.frames[ctx:]) for c, u in zip(clips, unrelated)]
                    )
                ),
                None,
                "",
                "dB",
            )
        )

    # ---- inpaint / outpaint with the default box (the centre half)
    for task, inside in ((Task.inpaint, True), (Task.outpaint, False)):
        if not on(task.value):
            continue
        out = gen(
            task,
            [c.caption for c in clips],
            [GenerationInputs(video=c.frames, video_fps=card.fps) for c in clips],
        )
        rows.append(
            Row(
                task.value,
                "masked-region PSNR",
                float(
                    np.mean(
                        [
                            psnr(_box_pixels(c.frames, inside), _box_pixels(r.frames, inside))
                            for c, r in zip(clips, out)
                        ]
                    )
                ),
                float(
                    np.mean(
                        [
                            psnr(_box_pixels(c.frames, inside), _box_pixels(u.frames, inside))
                            for c, u in zip(clips, unrelated)
                        ]
                    )
                ),
                None,
                "",
                "dB",
            )
        )

    # ---- stylize: the clip's motion and shape, a new colour and background from the prompt
    if on("stylize"):
        styled = [av.restyle(s, rng) for s in specs]
        prompts = [av.caption(s, np.random.default_rng([s.seed, 2]), "heldout") for s in styled]
        out = gen(
            Task.stylize,
            prompts,
            [GenerationInputs(video=c.frames, video_fps=card.fps) for c in clips],
        )
        rows.append(
            Row(
                "stylize",
                "motion preserved",
                _acc([classify_motion(r.frames) for r in out], [lab["motion"] for lab in labels]),
                1 / 6,
                truth_motion,
                ">= 85 %",
            )
        )
        rows.append(
            Row(
                "stylize",
                "new colour matched",
                _acc([dominant_colour(r.frames) for r in out], [s.main.colour for s in styled]),
                1 / 6,
                None,
            )
        )
        rows.append(
            Row(
                "stylize",
                "new background matched",
                _acc([classify_background(r.frames) for r in out], [s.background for s in styled]),
                1 / 3,
                None,
            )
        )

    # ---- video_to_audio: no prompt, the soundtrack must come from the pixels
    if on("video_to_audio"):
        out = gen(
            Task.video_to_audio,
            [None] * n,
            [GenerationInputs(video=c.frames, video_fps=card.fps) for c in clips],
        )
        audios = [r.audio for r in out]
        rows.append(
            Row(
                "video_to_audio",
                "timbre accuracy",
                _acc([classify_timbre(a) for a in audios], [lab["timbre"] for lab in labels]),
                1 / 3,
                _acc([classify_timbre(c.audio) for c in clips], [lab["timbre"] for lab in labels]),
                ">= 90 %",
            )
        )
        rows.append(
            Row(
                "video_to_audio",
                "pitch-contour correlation",
                pitch_correlation(audios, specs),
                pitch_correlation([u.audio for u in unrelated], specs),
                pitch_correlation([c.audio for c in clips], specs),
                "",
                "",
            )
        )
        rows.append(
            Row(
                "video_to_audio",
                "loudness (size) accuracy",
                _acc([classify_loudness(a) for a in audios], [lab["size"] for lab in labels]),
                1 / 2,
                _acc([classify_loudness(c.audio) for c in clips], [lab["size"] for lab in labels]),
            )
        )

    # ---- audio_to_video: no prompt, the picture must come from the sound
    if on("audio_to_video"):
        out = gen(
            Task.audio_to_video,
            [None] * n,
            [GenerationInputs(audio=c.audio, audio_sample_rate=av.SAMPLE_RATE) for c in clips],
        )
        rows.append(
            Row(
                "audio_to_video",
                "shape accuracy",
                _acc([classify_shape(r.frames) for r in out], [lab["shape"] for lab in labels]),
                1 / 3,
                _acc([classify_shape(c.frames) for c in clips], [lab["shape"] for lab in labels]),
            )
        )
        vert = [vertical_motion(lab["motion"]) for lab in labels]
        rows.append(
            Row(
                "audio_to_video",
                "vertical-motion accuracy",
                _acc([vertical_motion(classify_motion(r.frames)) for r in out], vert),
                1 / 3,
                _acc([vertical_motion(classify_motion(c.frames)) for c in clips], vert),
            )
        )
    return rows


def format_table(rows: list[Row]) -> str:
    head = ["task", "metric", "model", "chance", "true clips", "target"]
    body = [r.cells() for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join(
        [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(b) for b in body]
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="videopoet eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="demo", help="checkpoint folder, shipped name or preset")
    p.add_argument("--n", type=int, default=24, help="held-out clips per task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="0: off")
    p.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="classifier-free guidance scale (default: the model card's)",
    )
    p.add_argument(
        "--sr-guidance",
        type=float,
        default=None,
        help="the SR stage's classifier-free guidance scale (default: the one in the "
        "checkpoint's config.json, super_resolution.guidance)",
    )
    p.add_argument(
        "--tasks",
        default="",
        help="comma-separated subset (tokenizers, text_to_video, words, super_resolution, ...); "
        "words: text_to_video with held-out colour names, motion phrasings and style words; "
        "a checkpoint with an SR stage adds text_to_video rows at its size and the "
        "super_resolution rows",
    )
    p.add_argument("--json", default="", help="also write the rows to this JSON file")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--quantize",
        choices=["none", "int8"],
        default="none",
        help="the LM's weights as VIDEOPOET_QUANTIZE keeps them in the service",
    )
    return p


def main_eval(argv: list[str] | None = None) -> list[Row]:
    import json

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.guidance is None:
        from models.card import load_card

        args.guidance = load_card(args.model).guidance_scale
    t0 = time.perf_counter()
    rows = run_eval(
        args.model,
        args.n,
        seed=args.seed,
        temperature=args.temperature,
        top_k=args.top_k or None,
        guidance=args.guidance,
        device=args.device,
        tasks=[t for t in args.tasks.split(",") if t] or None,
        quantize=args.quantize,
        sr_guidance=args.sr_guidance,
    )
    sr_guidance = "" if args.sr_guidance is None else f", SR guidance {args.sr_guidance}"
    print(
        f"model {args.model}: {args.n} held-out clips per task, temperature {args.temperature}, "
        f"top-k {args.top_k or 'off'}, guidance {args.guidance}, seed {args.seed}, "
        f"quantize {args.quantize}{sr_guidance} "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.__dict__ for r in rows], f, indent=1)
    return rows


if __name__ == "__main__":
    main_eval()
