"""`videopoet train sr`: the super-resolution stage over the folder's video tokenizer."""

import json

import numpy as np
import pytest
import torch

from models.pipeline import ModelConfig
from models.super_resolution import SuperResolution, masked_loss
from models.train import super_resolution as stage
from models.train.loop import Run
from models.train.token_cache import load_tokenizers
from models.video_tokenizer import VideoTokenizer
from tests.models.train.runs import copy_tokenized, read_log, train_run


def _folder(tmp_path, tokenized):
    return copy_tokenized(tokenized, tmp_path / "run", with_cache=False)


def _cache(folder):
    return torch.load(folder / "train" / stage.SR_CACHE, weights_only=True)


def test_sr_stage_pairs_each_clip_at_both_sizes_and_its_steps_lower_the_loss(tmp_path, tokenized):
    folder = _folder(tmp_path, tokenized)
    train_run("sr", folder, "--steps", "1", "--batch", "2", "--clips", "6")
    config = ModelConfig.from_dict(json.loads((folder / "config.json").read_text()))
    assert config.sr is not None and config.sr.grid == (5, 8, 8)  # tiny: 32x32 -> 64x64
    assert config.sr.codebook_bits == config.video.codebook_bits
    d = _cache(folder)
    assert d["low"].shape == (6, 5, 4, 4) and d["high"].shape == (6, 5, 8, 8)
    # the pairs are the folder's tokenizer's codes of one scene at the two sizes
    video_tok, _ = load_tokenizers(Run(folder, "sr", "tiny"))
    data = stage.open_data("shapes-av", config.card, seed=0, scale=2)
    order = np.random.default_rng([0, 11]).permutation(len(data))[:6]
    x = VideoTokenizer.frames_to_tensor(data[int(order[2])].frames[None])
    assert torch.equal(video_tok.encode(x)[0].to(torch.int16), d["high"][2])

    def loss():
        from safetensors.torch import load_file

        model = SuperResolution(config.sr)
        model.load_state_dict(load_file(str(folder / "super_resolution.safetensors")))
        g = torch.Generator().manual_seed(0)
        text = d["text"][d["caption"]].float()
        mask = torch.arange(text.shape[1])[None] < d["text_len"][d["caption"]][:, None]
        with torch.no_grad():
            return float(masked_loss(model, d["high"].long(), d["low"].long(), text, mask, g))

    before = loss()
    train_run("sr", folder, "--steps", "40", "--batch", "6", "--clips", "6", "--lr", "5e-3",
              "--resume")  # fmt: skip
    assert loss() < before - 0.5
    assert read_log(folder, "super_resolution")[-1]["step"] == 40


def test_a_stopped_tokenizing_goes_on_where_it_stopped(tmp_path, tokenized, monkeypatch):
    whole = _folder(tmp_path / "a", tokenized)
    monkeypatch.setattr(stage, "CHUNK", 2)
    train_run("sr", whole, "--steps", "1", "--batch", "2", "--clips", "6")

    folder = _folder(tmp_path / "b", tokenized)
    real, calls = stage.tokenize_pairs, []

    def stopping(*args, **kwargs):
        calls.append(len(args[2]))
        if len(calls) == 3:
            raise KeyboardInterrupt  # stopped while tokenizing the third chunk
        return real(*args, **kwargs)

    monkeypatch.setattr(stage, "tokenize_pairs", stopping)
    with pytest.raises(KeyboardInterrupt):
        train_run("sr", folder, "--steps", "1", "--batch", "2", "--clips", "6")
    assert len(_cache(folder)["low"]) == 4  # two chunks written
    calls.clear()
    monkeypatch.setattr(stage, "tokenize_pairs", real)
    monkeypatch.setattr(
        stage, "tokenize_pairs", lambda *a, **k: calls.append(len(a[2])) or real(*a, **k)
    )
    train_run("sr", folder, "--steps", "1", "--batch", "2", "--clips", "6")
    assert calls == [2]  # only the clips it lacked
    a, b = _cache(whole), _cache(folder)
    assert torch.equal(a["low"], b["low"]) and torch.equal(a["high"], b["high"])
    assert a["captions"] == b["captions"]


def test_low_degrade_conditions_a_share_of_rows_on_the_clip_blurred(tmp_path, tokenized):
    from models.evaluate import dominant_colour, track

    folder = _folder(tmp_path, tokenized)
    config = ModelConfig.from_dict(json.loads((folder / "config.json").read_text()))
    clip = stage.open_data("shapes-av", config.card, seed=0)[0].frames
    soft = stage.degrade(clip)
    # the object keeps its place and colour; its outline is not the sharp one
    assert soft.shape == clip.shape and dominant_colour(soft) == dominant_colour(clip)
    sharp, blurred = track(clip), track(soft)
    assert np.abs(sharp.cx - blurred.cx).max() <= 1.5 and np.abs(sharp.cy - blurred.cy).max() <= 1.5
    assert np.abs(soft.astype(int) - clip).max() > 60

    train_run("sr", folder, "--steps", "2", "--batch", "2", "--clips", "6", "--low-degrade", "0.5")
    d = _cache(folder)
    assert d["low_soft"].shape == d["low"].shape == (6, 5, 4, 4)
    # each clip's blurred codes are its own frames blurred, in the order of the sharp ones
    video_tok, _ = load_tokenizers(Run(folder, "sr", "tiny"))
    data = stage.open_data("shapes-av", config.card, seed=0)
    order = np.random.default_rng([0, 11]).permutation(len(data))[:6]
    x = VideoTokenizer.frames_to_tensor(stage.degrade(data[int(order[3])].frames)[None])
    assert torch.equal(video_tok.encode(x)[0].to(torch.int16), d["low_soft"][3])
    assert not torch.equal(d["low_soft"], d["low"])
    # a run without the flag keeps the cache as it is and trains on the sharp codes
    train_run("sr", folder, "--steps", "3", "--batch", "2", "--clips", "6", "--resume")
    assert torch.equal(_cache(folder)["low_soft"], d["low_soft"])


def test_object_weight_weights_the_tokens_that_hold_the_object(tmp_path, tokenized, monkeypatch):
    from models.evaluate import object_mask

    folder = _folder(tmp_path, tokenized)
    weights = []

    def recording(*args):
        weights.append(args[6])
        return masked_loss(*args)

    monkeypatch.setattr(stage, "masked_loss", recording)
    train_run("sr", folder, "--steps", "2", "--batch", "2", "--clips", "6", "--object-weight", "4")
    d = _cache(folder)
    assert d["high_object"].shape == d["high"].shape == (6, 5, 8, 8)
    # each clip's marked tokens hold every pixel of its objects (saturated on a grey ground),
    # and leave most of the frame unmarked
    config = ModelConfig.from_dict(json.loads((folder / "config.json").read_text()))
    video_tok, _ = load_tokenizers(Run(folder, "sr", "tiny"))
    data = stage.open_data("shapes-av", config.card, seed=0, scale=2)
    order = np.random.default_rng([0, 11]).permutation(len(data))[:6]
    for row, i in enumerate(order):
        pixels = np.stack([object_mask(f) for f in data[int(i)].frames])
        held = video_tok.token_mask(torch.from_numpy(pixels)[None, None]).view(5, 8, 8)
        assert held.any() and bool((d["high_object"][row] >= held).all())
    assert float(d["high_object"].float().mean()) < 0.7
    # the loss weighs them 1 + 4 times, the rest once
    assert len(weights) == 2 and all(set(w.unique().tolist()) == {1.0, 5.0} for w in weights)
    # a run without the flag keeps the cache and weighs every token alike
    weights.clear()
    train_run("sr", folder, "--steps", "3", "--batch", "2", "--clips", "6", "--resume")
    assert torch.equal(_cache(folder)["high_object"], d["high_object"]) and weights == [None]


def test_another_sr_preset_after_training_is_refused(tmp_path, tokenized):
    folder = _folder(tmp_path, tokenized)
    train_run("sr", folder, "--steps", "1", "--batch", "2", "--clips", "4")
    with pytest.raises(SystemExit, match="trained with another config"):
        train_run("sr", folder, "--steps", "2", "--clips", "4", "--sr-preset", "demo", "--resume")
    with pytest.raises(SystemExit, match="no SR preset named 'huge'"):
        train_run("sr", tmp_path / "new", "--steps", "1", "--sr-preset", "huge")


def test_video_tokenizer_scales_take_the_steps_in_turn(tmp_path, monkeypatch):
    from models.train import video_tokenizer

    real, sizes = video_tokenizer.video_batch, []
    real_weights, margins = video_tokenizer.loss_weights, []

    def recording(*args, **kwargs):
        x = real(*args, **kwargs)
        sizes.append(tuple(x.shape[-2:]))
        return x

    def weights(fg, weight, margin):
        margins.append(margin)
        return real_weights(fg, weight, margin)

    monkeypatch.setattr(video_tokenizer, "video_batch", recording)
    monkeypatch.setattr(video_tokenizer, "loss_weights", weights)
    train_run("video-tokenizer", tmp_path, "--steps", "4", "--batch", "1", "--scales", "1,2",
              "--foreground-weight", "5", "--foreground-margin", "1")  # fmt: skip
    assert sizes == [(32, 32), (64, 64), (32, 32), (64, 64)]  # tiny's card, then twice it
    assert margins == [1, 2, 1, 2]  # the band is as wide in the scene at either scale
    with pytest.raises(SystemExit, match="whole numbers >= 1"):
        train_run("video-tokenizer", tmp_path / "x", "--steps", "1", "--scales", "1,x")


def test_the_stage_can_have_its_own_tokenizer_at_the_larger_size(tmp_path, tokenized):
    """--sr-tokenizer-from: the larger size's codes are that tokenizer's, the card's size's
    the folder's own (the LM's); another tokenizer after training is refused."""
    from models.pipeline import SR_TOKENIZER

    own = tmp_path / "vt"
    train_run("video-tokenizer", own, "--steps", "1", "--batch", "1", "--scales", "2")
    folder = _folder(tmp_path, tokenized)
    train_run("sr", folder, "--steps", "1", "--batch", "2", "--clips", "6",
              "--sr-tokenizer-from", str(own))  # fmt: skip
    config = ModelConfig.from_dict(json.loads((folder / "config.json").read_text()))
    assert config.sr_video is not None
    assert (folder / f"{SR_TOKENIZER}.safetensors").read_bytes() == (
        own / "video_tokenizer.safetensors"
    ).read_bytes()
    d = _cache(folder)
    lm_tok, _ = load_tokenizers(Run(folder, "sr", "tiny"))
    high_tok, _ = stage.high_tokenizer(Run(folder, "sr", "tiny"))
    assert high_tok is not None
    for scale, key, tok in ((1, "low", lm_tok), (2, "high", high_tok)):
        data = stage.open_data("shapes-av", config.card, seed=0, scale=scale)
        order = np.random.default_rng([0, 11]).permutation(len(data))
        x = VideoTokenizer.frames_to_tensor(data[int(order[2])].frames[None])
        with torch.no_grad():
            assert torch.equal(tok.encode(x)[0].to(torch.int16), d[key][2]), key
    with torch.no_grad():  # the two tokenizers write different codes for the large clip
        assert not torch.equal(lm_tok.encode(x)[0].to(torch.int16), d["high"][2])

    # the same tokenizer again resumes; another one is refused
    train_run("sr", folder, "--steps", "2", "--batch", "2", "--clips", "6", "--resume",
              "--sr-tokenizer-from", str(own))  # fmt: skip
    with pytest.raises(SystemExit, match="trained on another tokenizer's codes"):
        train_run("sr", folder, "--steps", "3", "--batch", "2", "--clips", "6", "--resume",
                  "--sr-tokenizer-from", str(folder))  # fmt: skip
    with pytest.raises(SystemExit, match="not a checkpoint folder"):
        train_run("sr", tmp_path / "new", "--steps", "1", "--sr-tokenizer-from", str(tmp_path))
