"""Media in and out with ffmpeg: probe and decode inputs, encode H.264/AAC mp4, thumbnails,
spritesheets and PNG stills.

Every ffmpeg run is a subprocess with a timeout (a malformed file must not hang a worker or
the API). Command lines are built with ffmpeg-python and run on the binary that
imageio-ffmpeg ships, or `VIDEOPOET_FFMPEG`. Torch-free: the API imports `probe` from here.
"""

from __future__ import annotations

import logging
import math
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ffmpeg
import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 120.0
# Demuxers that read a single still image.
IMAGE_FORMATS = frozenset(
    {"image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe", "jpegxl_pipe"}
)
# Frames shown on a spritesheet (evenly spaced over the video).
SPRITESHEET_MAX_FRAMES = 16
# A still image (text_to_image) is also served as an mp4 showing it this long.
STILL_VIDEO_SECONDS = 1.0


class MediaError(ValueError):
    """A file ffmpeg cannot read or write; the message says what ffmpeg reported."""


class MediaTimeout(MediaError):
    """ffmpeg ran past its time limit."""


def ffmpeg_exe() -> str:
    """`VIDEOPOET_FFMPEG`, else the binary imageio-ffmpeg ships."""
    exe = os.environ.get("VIDEOPOET_FFMPEG")
    if exe:
        return exe
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class MediaInfo:
    """What ffmpeg says about a file."""

    format: str  # demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2" or "png_pipe"
    duration: float | None = None  # seconds
    width: int | None = None  # display size (rotation applied)
    height: int | None = None
    fps: float | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    sample_rate: int | None = None

    @property
    def has_video(self) -> bool:
        return self.video_codec is not None

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None

    @property
    def kind(self) -> str | None:
        """ "image", "video", "audio", or None for none of them."""
        if self.format in IMAGE_FORMATS and self.has_video:
            return "image"
        if self.has_video:
            return "video"
        if self.has_audio:
            return "audio"
        return None


def _run(args: list[str], *, input: bytes | None = None, timeout: float) -> bytes:
    try:
        proc = subprocess.run(args, input=input, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise MediaTimeout(f"ffmpeg took longer than {timeout:g} s") from exc
    if proc.returncode != 0:
        raise MediaError(_last_error(proc.stderr) or f"ffmpeg exited with {proc.returncode}")
    return proc.stdout


def _last_error(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


_INPUT_RE = re.compile(r"^Input #0, (.+), from ", re.M)
_DURATION_RE = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_STREAM_RE = re.compile(r"^\s*Stream #0:\d+[^:]*: (Video|Audio): (\w+)(.*)$", re.M)
_SIZE_RE = re.compile(r", (\d+)x(\d+)(?=[ ,\[]|$)")
# ffmpeg prints a rate that is a multiple of 1000 as "1k", "30k".
_FPS_RE = re.compile(r", (\d+(?:\.\d+)?)(k?) fps")
_TBR_RE = re.compile(r", (\d+(?:\.\d+)?)(k?) tbr")
_RATE_RE = re.compile(r", (\d+) Hz")
_ROTATION_RE = re.compile(r"rotation of (-?\d+(?:\.\d+)?) degrees")
_MAX_PIXELS_RE = re.compile(r"Picture size (\d+)x(\d+) exceeds specified max pixel count")


def parse_probe(stderr: str) -> MediaInfo:
    """Read ffmpeg's description of input #0 (its stderr)."""
    fmt = _INPUT_RE.search(stderr)
    if fmt is None:
        raise MediaError("not a media file ffmpeg can read")
    duration = None
    if m := _DURATION_RE.search(stderr):
        duration = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
    info: dict = {"format": fmt[1].strip(), "duration": duration}
    for kind, codec, rest in _STREAM_RE.findall(stderr):
        if kind == "Video" and "video_codec" not in info and "(attached pic)" not in rest:
            info["video_codec"] = codec
            if m := _SIZE_RE.search(rest):
                info["width"], info["height"] = int(m[1]), int(m[2])
            if m := (_FPS_RE.search(rest) or _TBR_RE.search(rest)):
                info["fps"] = float(m[1]) * (1000 if m[2] else 1)
        elif kind == "Audio" and "audio_codec" not in info:
            info["audio_codec"] = codec
            if m := _RATE_RE.search(rest):
                info["sample_rate"] = int(m[1])
    rotation = _ROTATION_RE.search(stderr)
    if rotation and round(abs(float(rotation[1]))) % 180 == 90 and "width" in info:
        info["width"], info["height"] = info["height"], info["width"]
    return MediaInfo(**info)


def probe(
    path: str | Path, *, timeout: float = DEFAULT_TIMEOUT, max_pixels: int | None = None
) -> MediaInfo:
    """Describe a file, decoding its first seconds so a corrupt one fails here.

    `max_pixels`: ffmpeg refuses to decode a larger picture, so a small file that declares a
    huge one (a decompression bomb) fails here without the memory it would take.
    Raises MediaError for an empty, truncated, unreadable or too large file.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise MediaError("the file is empty (0 bytes)")
    args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-xerror"]
    if max_pixels:
        args += ["-max_pixels", str(max_pixels)]
    args += ["-i", str(path), "-t", "2", "-f", "null", "-"]
    try:
        proc = subprocess.run(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise MediaTimeout(f"reading the file took longer than {timeout:g} s") from exc
    stderr = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        if m := _MAX_PIXELS_RE.search(stderr):
            raise MediaError(
                f"the picture is {m[1]}x{m[2]}: more than the {max_pixels} pixels read per frame"
            )
        raise MediaError(f"the file cannot be decoded: {_last_error(proc.stderr)}")
    info = parse_probe(stderr)
    if info.kind is None:
        raise MediaError("the file holds no video, image or audio stream")
    return info


def fit_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(width, height) scaled down, keeping the aspect, so neither exceeds max_side."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def decode_video(
    path: str | Path,
    *,
    fps: float | None = None,
    max_side: int | None = None,
    max_seconds: float | None = None,
    max_frames: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[np.ndarray, float]:
    """Frames (T, H, W, 3) uint8 and their rate. `fps` resamples; `max_side` scales down."""
    info = probe(path, timeout=timeout)
    if not info.has_video or not info.width or not info.height:
        raise MediaError("the file holds no video stream")
    width, height = fit_size(info.width, info.height, max_side)
    rate = fps or info.fps or 8.0
    input_args = {"t": max_seconds} if max_seconds else {}
    stream = ffmpeg.input(str(path), **input_args).video
    if fps:
        stream = stream.filter("fps", fps=fps)
    stream = stream.filter("scale", width, height)
    output_args = {"frames:v": max_frames} if max_frames else {}
    return _read_frames(stream, width, height, timeout, **output_args), float(rate)


def decode_image(
    path: str | Path, *, max_side: int | None = None, timeout: float = DEFAULT_TIMEOUT
) -> np.ndarray:
    """The first frame of an image (or video) as (H, W, 3) uint8."""
    frames, _ = decode_video(path, max_side=max_side, max_frames=1, timeout=timeout)
    return frames[0]


def decode_audio(
    path: str | Path,
    *,
    sample_rate: int,
    max_seconds: float | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> np.ndarray:
    """The first audio stream, mixed to mono and resampled: (N,) float32 in [-1, 1]."""
    input_args = {"t": max_seconds} if max_seconds else {}
    args = (
        ffmpeg.input(str(path), **input_args)
        .audio.output("pipe:", format="f32le", ac=1, ar=sample_rate)
        .global_args("-hide_banner", "-nostdin", "-loglevel", "error")
        .compile(cmd=ffmpeg_exe())
    )
    try:
        raw = _run(args, timeout=timeout)
    except MediaError as exc:
        raise MediaError(f"the file holds no decodable audio: {exc}") from exc
    if not raw:
        raise MediaError("the file holds no audio")
    return np.frombuffer(raw, np.float32).copy()


def decode_frames(
    path: str | Path, *, fps: float, width: int, height: int, timeout: float = DEFAULT_TIMEOUT
) -> np.ndarray:
    """Frames (T, height, width, 3) uint8 resampled to `fps` and scaled, area-averaged, to
    exactly width x height (the aspect is not kept): a model card's clip, for training.

    Unlike `decode_video` it does not probe first: the size is given, and a training set
    decodes many files."""
    stream = (
        ffmpeg.input(str(path))
        .video.filter("fps", fps=fps)
        .filter("scale", width, height, flags="area")
    )
    return _read_frames(stream, width, height, timeout)


def _read_frames(
    stream: Any, width: int, height: int, timeout: float, **output_args: Any
) -> np.ndarray:
    """Run a video stream scaled to width x height into raw RGB: (T, height, width, 3) uint8."""
    args = (
        ffmpeg.output(stream, "pipe:", format="rawvideo", pix_fmt="rgb24", **output_args)
        .global_args("-hide_banner", "-nostdin", "-loglevel", "error")
        .compile(cmd=ffmpeg_exe())
    )
    raw = _run(args, timeout=timeout)
    frame_bytes = width * height * 3
    if len(raw) < frame_bytes:
        raise MediaError("the video has no decodable frame")
    frames = np.frombuffer(raw[: len(raw) // frame_bytes * frame_bytes], np.uint8)
    return frames.reshape(-1, height, width, 3)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) uint8; got shape {frames.shape}")
    return np.ascontiguousarray(frames, dtype=np.uint8)


def encode_video(
    path: str | Path,
    frames: np.ndarray,
    fps: float,
    *,
    audio: np.ndarray | None = None,
    sample_rate: int | None = None,
    crf: int = 18,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """Write an H.264 (yuv420p) mp4, with the mono float32 `audio` muxed as AAC when given.

    Written to a temporary name then renamed, so a half-written file is never served.
    """
    frames = _check_frames(frames)
    _, height, width, _ = frames.shape
    path = Path(path)
    part = path.with_name(path.name + ".part")
    video = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", r=fps)
    # yuv420p needs even sides: pad odd ones by a pixel.
    streams = [video.video.filter("pad", "ceil(iw/2)*2", "ceil(ih/2)*2")]
    options: dict = {
        "vcodec": "libx264",
        "pix_fmt": "yuv420p",
        "crf": crf,
        "preset": "medium",
        "movflags": "+faststart",
        "format": "mp4",
    }
    # The audio goes through a raw float file beside the output (stdin carries the frames).
    audio_file = path.with_name(path.name + ".f32")
    try:
        if audio is not None:
            if not sample_rate:
                raise ValueError("audio needs its sample_rate")
            samples = np.clip(np.asarray(audio, np.float32).reshape(-1), -1.0, 1.0)
            audio_file.write_bytes(samples.tobytes())
            streams.append(
                ffmpeg.input(str(audio_file), format="f32le", ar=sample_rate, ac=1).audio
            )
            options.update({"acodec": "aac", "audio_bitrate": "128k"})
        args = (
            ffmpeg.output(*streams, str(part), **options)
            .overwrite_output()
            .global_args("-hide_banner", "-nostdin", "-loglevel", "error")
            .compile(cmd=ffmpeg_exe())
        )
        _run(args, input=frames.tobytes(), timeout=timeout)
        os.replace(part, path)
    finally:
        audio_file.unlink(missing_ok=True)
        part.unlink(missing_ok=True)
    return path


def encode_image(
    path: str | Path, frame: np.ndarray, *, timeout: float = DEFAULT_TIMEOUT, **codec: Any
) -> Path:
    """Write one (H, W, 3) uint8 frame; the format follows the suffix (.png, .webp, .jpg)."""
    frame = _check_frames(np.asarray(frame)[None])[0]
    height, width, _ = frame.shape
    path = Path(path)
    suffix = path.suffix.lower()
    formats: dict[str, dict[str, Any]] = {
        ".png": {"vcodec": "png"},
        ".webp": {"vcodec": "libwebp", "quality": 90},
        ".jpg": {"vcodec": "mjpeg", "pix_fmt": "yuvj444p", "q:v": 3},
        ".jpeg": {"vcodec": "mjpeg", "pix_fmt": "yuvj444p", "q:v": 3},
    }
    if suffix not in formats:
        raise ValueError(f"cannot write {suffix!r} images; use one of {', '.join(formats)}")
    part = path.with_name(path.name + ".part")
    args = (
        ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}")
        .output(str(part), format="image2", update=1, **{"frames:v": 1, **formats[suffix], **codec})
        .overwrite_output()
        .global_args("-hide_banner", "-nostdin", "-loglevel", "error")
        .compile(cmd=ffmpeg_exe())
    )
    try:
        _run(args, input=frame.tobytes(), timeout=timeout)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return path


def spritesheet_image(frames: np.ndarray, max_frames: int = SPRITESHEET_MAX_FRAMES) -> np.ndarray:
    """Up to `max_frames` evenly spaced frames tiled in a near-square grid, row by row."""
    frames = _check_frames(frames)
    count = min(len(frames), max_frames)
    picks = frames[np.linspace(0, len(frames) - 1, count).round().astype(int)]
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    _, height, width, _ = picks.shape
    sheet = np.zeros((rows * height, columns * width, 3), np.uint8)
    for i, frame in enumerate(picks):
        r, c = divmod(i, columns)
        sheet[r * height : (r + 1) * height, c * width : (c + 1) * width] = frame
    return sheet


def write_spritesheet(
    path: str | Path, frames: np.ndarray, *, timeout: float = DEFAULT_TIMEOUT
) -> Path:
    return encode_image(path, spritesheet_image(frames), timeout=timeout)


def write_thumbnail(
    path: str | Path, frames: np.ndarray, *, timeout: float = DEFAULT_TIMEOUT
) -> Path:
    """The middle frame, as the suffix says (webp for the API)."""
    frames = _check_frames(frames)
    return encode_image(path, frames[len(frames) // 2], timeout=timeout)
