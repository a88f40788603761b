"""ffmpeg in and out: what we encode decodes to the same frames, size, rate and sound."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models import media
from workers.jobs import scale_box


def _frames(t: int = 17, h: int = 32, w: int = 32) -> np.ndarray:
    frames = np.full((t, h, w, 3), 40, np.uint8)
    for i in range(t):
        frames[i, h // 4 : h // 2, i % w : i % w + 8] = (230, 30, 30)
    return frames


def test_mp4_round_trip_keeps_frames_size_rate_and_audio(tmp_path: Path) -> None:
    frames = _frames()
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(34_000) / 16_000)).astype(np.float32)
    path = media.encode_video(tmp_path / "a.mp4", frames, 8.0, audio=tone, sample_rate=16_000)
    info = media.probe(path)
    assert (info.kind, info.video_codec, info.audio_codec) == ("video", "h264", "aac")
    assert (info.width, info.height, info.fps, info.sample_rate) == (32, 32, 8.0, 16_000)
    decoded, fps = media.decode_video(path)
    assert decoded.shape == frames.shape and fps == 8.0
    assert np.abs(decoded.astype(int) - frames).mean() < 12  # lossy, but the same picture
    audio = media.decode_audio(path, sample_rate=16_000)
    assert abs(len(audio) - len(tone)) < 1_600 and 0.3 < np.abs(audio).max() <= 1.0
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob("*.f32"))


def test_odd_sizes_are_padded_for_yuv420p(tmp_path: Path) -> None:
    path = media.encode_video(tmp_path / "odd.mp4", _frames(5, 31, 33), 8.0)
    info = media.probe(path)
    assert (info.width, info.height) == (34, 32) and not info.has_audio


def test_decode_resamples_and_scales_down(tmp_path: Path) -> None:
    path = media.encode_video(tmp_path / "big.mp4", _frames(32, 96, 128), 16.0)
    frames, fps = media.decode_video(path, fps=8.0, max_side=64)
    assert frames.shape == (16, 48, 64, 3) and fps == 8.0


def test_thumbnail_spritesheet_and_png(tmp_path: Path) -> None:
    frames = _frames()
    thumb = media.probe(media.write_thumbnail(tmp_path / "t.webp", frames))
    assert (thumb.kind, thumb.video_codec, thumb.width) == ("image", "webp", 32)
    sheet = media.probe(media.write_spritesheet(tmp_path / "s.jpg", frames))
    assert (sheet.kind, sheet.width, sheet.height) == ("image", 128, 128)  # 16 tiles, 4x4
    png = media.encode_image(tmp_path / "i.png", frames[3])
    assert (media.decode_image(png) == frames[3]).all()  # lossless


def test_spritesheet_tiles_evenly_spaced_frames() -> None:
    frames = np.stack([np.full((2, 3, 3), i, np.uint8) for i in range(5)])
    sheet = media.spritesheet_image(frames)
    assert sheet.shape == (2 * 2, 3 * 3, 3)  # 5 frames -> 3 columns, 2 rows
    assert [sheet[0, 0, 0], sheet[0, 3, 0], sheet[2, 0, 0], sheet[2, 6, 0]] == [0, 1, 3, 0]


@pytest.mark.parametrize(
    ("content", "says"),
    [(b"", "empty"), (b"not a video at all" * 50, "cannot be decoded")],
)
def test_unreadable_files_raise_media_error(tmp_path: Path, content: bytes, says: str) -> None:
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(media.MediaError, match=says):
        media.probe(path)


def test_ffmpeg_runs_under_a_time_limit(tmp_path: Path) -> None:
    path = media.encode_video(tmp_path / "a.mp4", _frames(), 8.0)
    with pytest.raises(media.MediaTimeout, match="longer than"):
        media.probe(path, timeout=0.001)


def test_parse_probe_reads_rotation_and_ignores_cover_art() -> None:
    stderr = (
        "Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'x.mp4':\n"
        "  Duration: 00:00:03.50, start: 0.000000, bitrate: 100 kb/s\n"
        "  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p, 640x360, "
        "30 fps\n"
        "      displaymatrix: rotation of -90.00 degrees\n"
        "  Stream #0:1[0x2](und): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, stereo, fltp\n"
    )
    info = media.parse_probe(stderr)
    assert (info.width, info.height, info.fps, info.duration) == (360, 640, 30.0, 3.5)
    assert info.sample_rate == 44_100
    art = (
        "Input #0, mp3, from 'a.mp3':\n  Stream #0:0: Audio: mp3, 44100 Hz\n"
        "  Stream #0:1: Video: png, 300x300 (attached pic)\n"
    )
    assert media.parse_probe(art).kind == "audio"


def test_mask_box_follows_the_scaled_frames() -> None:
    info = media.MediaInfo(format="mp4", width=640, height=360, video_codec="h264")
    assert scale_box((64, 36, 320, 180), info, (90, 160)) == (16, 9, 80, 45)


def test_videopoet_ffmpeg_is_the_binary_every_caller_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One media layer: the service's encode and probe, and training's clip decoder, all run
    # the ffmpeg that VIDEOPOET_FFMPEG names.
    import imageio_ffmpeg

    from models.card import BUILTIN_CARDS
    from models.train.data import JsonlVideoData

    calls = tmp_path / "calls.log"
    wrapper = tmp_path / "ffmpeg-wrapper"
    real = imageio_ffmpeg.get_ffmpeg_exe()
    wrapper.write_text(f'#!/bin/sh\necho called >> "{calls}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("VIDEOPOET_FFMPEG", str(wrapper))

    clip = media.encode_video(tmp_path / "clip.mp4", _frames(), 8.0)
    encoded = len(calls.read_text().splitlines())
    assert encoded >= 1
    assert media.probe(clip).kind == "video"
    probed = len(calls.read_text().splitlines())
    assert probed > encoded

    (tmp_path / "clips.jsonl").write_text('{"video": "clip.mp4", "caption": "a red bar"}\n')
    example = JsonlVideoData(tmp_path / "clips.jsonl", BUILTIN_CARDS["tiny"])[0]
    assert example.frames.shape[1:] == (32, 32, 3)
    assert len(calls.read_text().splitlines()) > probed  # training decoded through it too
