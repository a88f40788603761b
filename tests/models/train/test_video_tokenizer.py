import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from models import shapes_av as av
from models.pipeline import ModelConfig, load_pipeline
from models.spec import Task, TaskSpec
from models.train.data import ShapesAVData
from models.train.errors import TrainingError
from models.train.video_tokenizer import (
    check_foreground_margin,
    colour_differences,
    foreground,
    loss_weights,
)
from models.video_tokenizer import VideoTokenizer
from tests.models.train.runs import read_log, train_run


@pytest.mark.parametrize(
    ("entropy_tokens", "chroma"), [("all", "0"), ("foreground", "0"), ("all", "1")]
)
def test_video_tokenizer_steps_lower_the_loss(tmp_path, entropy_tokens, chroma):
    card = ModelConfig.from_name("tiny").card
    clips = np.stack([ShapesAVData(card)[i].frames[:5] for i in range(4)])
    x = VideoTokenizer.frames_to_tensor(clips)
    config = ModelConfig.from_name("tiny").video

    def loss(model):
        model.eval()
        with torch.no_grad():
            return float((model(x).reconstruction - x).abs().mean())

    torch.manual_seed(0)
    before = loss(VideoTokenizer(config))  # the same init the run starts from (seed 0)
    train_run(
        "video-tokenizer",
        tmp_path,
        *("--steps", "30", "--batch", "4", "--lr", "3e-3", "--data", "shapes-av:4"),
        *("--crop-frames", "5", "--entropy-tokens", entropy_tokens),
        *("--entropy-weight", "0.05", "--chroma-weight", chroma),
    )
    trained = VideoTokenizer(config)
    trained.load_state_dict(load_file(str(tmp_path / "video_tokenizer.safetensors")))
    assert loss(trained) < 0.6 * before
    log = read_log(tmp_path, "video_tokenizer")
    assert log[-1]["step"] == 30
    assert ("chroma" in log[-1]) == (chroma != "0")


def test_adversarial_run_resumes_with_its_discriminator(tmp_path):
    args = ["--steps", "4", "--batch", "2", "--data", "shapes-av:4", "--crop-frames", "5",
            "--adversarial-weight", "0.5", "--adversarial-warmup", "1", "--log-every", "1"]  # fmt: skip
    split, straight = tmp_path / "split", tmp_path / "straight"
    train_run("video-tokenizer", split, *args, "--stop-at", "2")
    train_run("video-tokenizer", split, *args, "--resume")
    train_run("video-tokenizer", straight, *args)
    log = read_log(split, "video_tokenizer")
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert all("disc" in r and "adv" in r for r in log)
    state = torch.load(split / "train" / "video_tokenizer.pt", weights_only=True)
    assert state["disc_steps"] == 4
    # the discriminator is training state only: the shipped weights are the tokenizer's
    a = load_file(str(split / "video_tokenizer.safetensors"))
    assert set(a) == set(VideoTokenizer(ModelConfig.from_name("tiny").video).state_dict())
    # had the resumed run started a fresh discriminator, its loss would steer steps 3-4 apart
    b = load_file(str(straight / "video_tokenizer.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    straight_losses = [r["loss"] for r in read_log(straight, "video_tokenizer")]
    assert [r["loss"] for r in log] == pytest.approx(straight_losses)


def test_colour_differences_tell_the_palette_apart_and_ignore_grey():
    rgb = torch.tensor(list(av.COLOURS.values()) + [(0, 0, 0), (128, 128, 128), (255, 255, 255)])
    x = (rgb.float() / 127.5 - 1)[:, :, None, None, None]  # (9, 3, 1, 1, 1)
    d = colour_differences(x).flatten(1)
    palette, grey = d[: len(av.COLOURS)], d[len(av.COLOURS) :]
    assert torch.cdist(palette, palette).add(torch.eye(len(palette)) * 9).min() > 0.5
    assert grey.abs().max() < 1e-6


def test_foreground_marks_the_object():
    clip = av.generate_clip(0, size="large", shape="square", split="any")
    fg = foreground(VideoTokenizer.frames_to_tensor(clip.frames[None]))
    assert fg.shape == (1, 1, 17, 64, 64)
    side = 2 * av.SIZES["large"]
    assert abs(float(fg[0, 0, 0].sum()) - side * side) < 4 * side  # the square, edges aside


def test_decoder_only_trains_a_wider_decoder_on_the_same_tokens(tmp_path, tokenized):
    """--decoder-only: the encoder (so every token an LM was trained on) stays the
    --init-from checkpoint's, the decoder of the new widths learns to draw those codes, and
    the folder loads and generates as a whole; a run whose encoder would start untrained is
    refused before any step."""
    config = json.loads((tokenized / "config.json").read_text())
    config["video_tokenizer"].update(decoder_channels=8, decoder_channel_mult=[2, 3, 5])
    (tmp_path / "config.json").write_text(json.dumps(config))
    for name in ("audio_tokenizer.safetensors", "lm.safetensors"):
        shutil.copy(tokenized / name, tmp_path / name)
    args = ["--steps", "30", "--batch", "4", "--lr", "3e-3", "--data", "shapes-av:4",
            "--crop-frames", "5", "--log-every", "1", "--decoder-only"]  # fmt: skip
    with pytest.raises(SystemExit, match="--init-from"):
        train_run("video-tokenizer", tmp_path, *args)
    assert not (tmp_path / "video_tokenizer.safetensors").exists()
    train_run("video-tokenizer", tmp_path, *args, "--init-from", str(tokenized))

    source = load_file(str(tokenized / "video_tokenizer.safetensors"))
    tuned = load_file(str(tmp_path / "video_tokenizer.safetensors"))
    encoder = [k for k in tuned if k.startswith("encoder.")]
    assert encoder and all(torch.equal(tuned[k], source[k]) for k in encoder)
    assert tuned["decoder.proj.weight"].shape[0] == 8 * 5 != source["decoder.proj.weight"].shape[0]
    log = read_log(tmp_path, "video_tokenizer")
    assert np.mean([r["l1"] for r in log[-5:]]) < 0.7 * np.mean([r["l1"] for r in log[:3]])
    assert all(r["aux"] == 0 for r in log)  # no quantizer term: the codes are not trained

    data = ShapesAVData(ModelConfig.from_name("tiny").card)
    x = VideoTokenizer.frames_to_tensor(np.stack([data[i].frames[:5] for i in range(2)]))
    old, new = load_pipeline(str(tokenized)), load_pipeline(str(tmp_path))
    assert torch.equal(old.video_tokenizer.encode(x), new.video_tokenizer.encode(x))
    out = new.generate([TaskSpec(task=Task.text_to_image, prompt="a red ball", seed=0)], None)
    assert out[0].frames.shape[-3:] == (32, 32, 3)

    other = json.loads((tokenized / "config.json").read_text())
    other["video_tokenizer"]["channels"] = 8  # another encoder: its codes are not these
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="does not fit"):
        train_run("video-tokenizer", tmp_path / "other", *args, "--init-from", str(tokenized))


def test_foreground_margin_weights_a_band_of_background_alike():
    """--foreground-margin: the background within the margin of the object weighs what the
    object weighs, so an unsure edge pixel costs the same drawn either way; farther background
    keeps weight 1; a margin alone or below 0 is refused."""
    clip = av.generate_clip(0, size="large", shape="square", split="any")
    fg = foreground(VideoTokenizer.frames_to_tensor(clip.frames[None]))
    plain, band = loss_weights(fg, 10.0, 0), loss_weights(fg, 10.0, 2)
    ys, xs = torch.nonzero(fg[0, 0, 0], as_tuple=True)
    top, left = int(ys.min()), int(xs.min())
    assert float(plain[0, 0, 0, top - 1, left + 3]) == 1.0  # object alone: its edge tilts
    assert float(band[0, 0, 0, top - 1, left + 3]) == 11.0  # band: one pixel out weighs alike
    assert float(band[0, 0, 0, top - 2, left + 3]) == 11.0
    assert float(band[0, 0, 0, top - 3, left + 3]) == 1.0  # beyond the margin
    assert torch.equal(band * fg, plain * fg)  # the object itself unchanged
    with pytest.raises(TrainingError, match="give --foreground-weight"):
        check_foreground_margin(2, 0.0)
    with pytest.raises(TrainingError, match="0 or more"):
        check_foreground_margin(-1, 10.0)
