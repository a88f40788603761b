import json
import subprocess
import wave

import numpy as np
import pytest

from models import shapes_av as av
from models.pipeline import ModelConfig
from models.train.data import JsonlVideoData, ShapesAVData, open_data
from models.train.errors import TrainingError
from tests.models.train.runs import train_run


def _write_mp4(path, clip, audio=True):
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo",
           "-pix_fmt", "rgb24", "-s", "64x64", "-r", "8", "-i", "-"]  # fmt: skip
    if audio:
        wav = path.with_suffix(".wav")
        with wave.open(str(wav), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(av.SAMPLE_RATE)
            w.writeframes((clip.audio * 32767).astype("<i2").tobytes())
        cmd += ["-i", str(wav), "-c:a", "aac", "-shortest"]
    cmd += ["-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(cmd, input=clip.frames.tobytes(), check=True, timeout=60)


def test_jsonl_of_mp4_files_trains(tmp_path):
    clips = [av.generate_clip(i) for i in range(2)]
    lines = []
    for i, clip in enumerate(clips):
        _write_mp4(tmp_path / f"v{i}.mp4", clip)
        lines.append(json.dumps({"video": f"v{i}.mp4", "caption": clip.caption}))
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")

    card = ModelConfig.from_name("tiny").card
    data = JsonlVideoData(tmp_path / "data.jsonl", card)
    ex = data[0]
    assert ex.frames.shape[1:] == (card.height, card.width, 3) and 15 <= len(ex.frames) <= 18
    assert ex.caption == clips[0].caption
    assert abs(len(ex.audio) - len(ex.frames) / card.fps * card.sample_rate) < 2
    assert np.abs(ex.audio).max() > 0.02  # the soundtrack came through

    out = tmp_path / "run"
    train_run("video-tokenizer", out, "--steps", "2", "--batch", "1",
              "--data", str(tmp_path / "data.jsonl"))  # fmt: skip
    assert (out / "video_tokenizer.safetensors").is_file()

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"video": "missing.mp4", "caption": "x"}) + "\n")
    with pytest.raises(TrainingError, match="ffmpeg could not decode"):
        JsonlVideoData(bad, card)[0]


def test_a_video_without_audio_gets_silence(tmp_path):
    clip = av.generate_clip(0)
    _write_mp4(tmp_path / "mute.mp4", clip, audio=False)
    (tmp_path / "data.jsonl").write_text(json.dumps({"video": "mute.mp4"}) + "\n")
    card = ModelConfig.from_name("tiny").card
    ex = JsonlVideoData(tmp_path / "data.jsonl", card)[0]
    assert ex.caption == "" and len(ex.frames) == len(clip.frames)
    assert len(ex.audio) == round(len(ex.frames) / card.fps * card.sample_rate)
    assert not ex.audio.any()


def test_open_data_names_what_it_accepts(tmp_path):
    card = ModelConfig.from_name("tiny").card
    assert len(open_data("shapes-av:5", card)) == 5
    assert isinstance(open_data("shapes-av", card), ShapesAVData)
    for spec in ("clips.csv", "shapes-av:many"):
        with pytest.raises(TrainingError, match="shapes-av"):
            open_data(spec, card)
    (tmp_path / "x.jsonl").write_text(json.dumps({"caption": "no video"}) + "\n")
    with pytest.raises(TrainingError, match='needs a "video" path'):
        open_data(str(tmp_path / "x.jsonl"), card)


def test_scale_draws_the_same_scenes_at_a_multiple_of_the_card_size():
    card = ModelConfig.from_name("demo").card  # 64x64
    small, big = (
        open_data("shapes-av", card, seed=5)[3],
        open_data("shapes-av", card, seed=5, scale=2)[3],
    )
    assert small.frames.shape == (17, 64, 64, 3) and big.frames.shape == (17, 128, 128, 3)
    assert small.caption == big.caption and np.array_equal(small.audio, big.audio)
    pooled = big.frames.astype(np.float32).reshape(17, 64, 2, 64, 2, 3).mean(axis=(2, 4))
    assert np.abs(pooled - small.frames).mean() < 1.0  # one scene, two rasterizations
