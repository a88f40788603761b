"""`train lm --captions broad`, `--tokenizers-from` and `--text-pool-heads`: the flags of the
text-fidelity fine-tune (issue #34; docs/training.md, "Caption vocabulary")."""

import json

import pytest
import torch
from safetensors.torch import load_file

from models import shapes_av as av
from models.train import main_train
from models.train.data import ShapesAVData, open_data
from models.train.errors import TrainingError
from tests.models.train.runs import TOKENIZERS, copy_tokenized, read_log, train_run


def states(d: dict) -> list[torch.Tensor]:
    """Each clip's caption states, trimmed to its length."""
    return [d["text"][c, : d["text_len"][c]] for c in d["caption"]]


def test_broad_captions_caption_the_same_clips(tmp_path, tokenized):
    """A template cache asked for broad captions keeps its tokens and gets the captions a
    broad cache built from nothing has; the clips are the same either way."""
    card = load_card_of(tokenized)
    template, broad = ShapesAVData(card, seed=1), ShapesAVData(card, seed=1, captions="broad")
    a, b = template[2], broad[2]
    assert torch.equal(torch.from_numpy(a.frames), torch.from_numpy(b.frames))
    assert a.caption == av.generate_clip(3).caption and a.caption != b.caption
    assert b.caption == broad.caption(2) == av.generate_clip(3, phrasing="broad").caption
    with pytest.raises(TrainingError, match="own captions"):
        open_data(str(tmp_path / "clips.jsonl"), card, captions="broad")

    recaptioned = copy_tokenized(tokenized, tmp_path / "recaptioned")
    fresh = copy_tokenized(tokenized, tmp_path / "fresh", with_cache=False)
    old = torch.load(recaptioned / "train" / "lm_data.pt", weights_only=True)
    train_run("lm", recaptioned, "--steps", "1", "--batch", "2", "--clips", "6",
              "--captions", "broad")  # fmt: skip
    train_run("lm", fresh, "--steps", "1", "--batch", "2", "--clips", "6", "--captions", "broad")
    r = torch.load(recaptioned / "train" / "lm_data.pt", weights_only=True)
    f = torch.load(fresh / "train" / "lm_data.pt", weights_only=True)
    assert r["captions"] == f["captions"] == "broad" and old["captions"] == "template"
    for k in ("video", "control", "audio"):
        assert torch.equal(r[k], old[k]) and torch.equal(r[k], f[k])
    for x, y in zip(states(r), states(f), strict=True):
        torch.testing.assert_close(x, y)
    assert any(x.shape != y.shape or not torch.equal(x, y) for x, y in zip(states(r), states(old)))


def load_card_of(folder):
    from models.pipeline import ModelConfig

    return ModelConfig.from_dict(json.loads((folder / "config.json").read_text())).card


def test_an_lm_fine_tune_in_one_command(tmp_path, tokenized):
    """--tokenizers-from fills a new folder with the checkpoint's config and tokenizers and
    --text-pool-heads adds the pooled caption queries before the first step; the same command
    run again resumes."""
    source = copy_tokenized(tokenized, tmp_path / "source", with_cache=False)
    config = json.loads((source / "config.json").read_text())
    config["lm"]["text_global"] = True
    (source / "config.json").write_text(json.dumps(config))
    train_run("lm", source, "--steps", "1", "--batch", "2", "--clips", "2")

    out = tmp_path / "fine-tune"
    command = ["--tokenizers-from", str(source), "--init-from", str(source),
               "--text-pool-heads", "2", "--captions", "broad", "--clips", "4", "--batch", "2",
               "--resume"]  # fmt: skip
    train_run("lm", out, "--steps", "1", *command)
    for name in TOKENIZERS:
        assert (out / name).read_bytes() == (source / name).read_bytes()
    lm = json.loads((out / "config.json").read_text())["lm"]
    assert lm["text_pool_heads"] == 2 and lm["text_global"]
    weights = load_file(str(out / "lm.safetensors"))
    assert any("pool" in k for k in weights) and len(weights) > len(
        load_file(str(source / "lm.safetensors"))
    )
    train_run("lm", out, "--steps", "2", *command)  # again: it resumes
    assert read_log(out, "lm")[-1]["step"] == 2

    with pytest.raises(SystemExit, match="has trained with text_pool_heads 2"):
        train_run("lm", out, "--steps", "3", "--resume", "--text-pool-heads", "4")
    with pytest.raises(SystemExit, match="needs text_global"):
        train_run("lm", tmp_path / "other", "--tokenizers-from", str(tokenized),
                  "--text-pool-heads", "2", "--clips", "2", "--steps", "1")  # fmt: skip
    with pytest.raises(SystemExit, match="has its own"):
        main_train(["lm", "--out", str(tmp_path / "x"), "--data", "clips.jsonl",
                    "--captions", "broad"])  # fmt: skip


def test_fresh_tensors_train_at_their_own_learning_rate(tmp_path, tokenized):
    """--fresh-lr-mult: the caption queries --text-pool-heads adds (which --init-from cannot
    fill) train at that multiple of the schedule's lr, the LM's own tensors at the schedule's;
    the log shows both, --resume keeps the split, and a run that trained as one group refuses
    the flag rather than silently ignoring it."""
    source = copy_tokenized(tokenized, tmp_path / "source")
    config = json.loads((source / "config.json").read_text())
    config["lm"]["text_global"] = True
    (source / "config.json").write_text(json.dumps(config))
    train_run("lm", source, "--steps", "1", "--batch", "2", "--clips", "6")
    before = load_file(str(source / "lm.safetensors"))

    out = copy_tokenized(source, tmp_path / "fine-tune")
    command = ["--init-from", str(source), "--text-pool-heads", "2", "--clips", "6",
               "--batch", "2", "--steps", "40", "--log-every", "1"]  # fmt: skip
    train_run("lm", out, *command, "--fresh-lr-mult", "50", "--stop-at", "3")
    log = read_log(out, "lm")
    assert [r["step"] for r in log] == [1, 2, 3]
    for r in log:
        assert r["lr_fresh"] == pytest.approx(50 * r["lr"], rel=1e-3) and r["lr"] > 0
    after = load_file(str(out / "lm.safetensors"))
    assert not torch.equal(after["text_pool.weight"], torch.zeros_like(after["text_pool.weight"]))

    train_run("lm", out, *command, "--resume", "--stop-at", "5")  # no flag: the checkpoint's
    log = read_log(out, "lm")
    assert [r["step"] for r in log][-2:] == [4, 5]
    assert log[-1]["lr_fresh"] == pytest.approx(50 * log[-1]["lr"], rel=1e-3)
    train_run("lm", out, *command, "--resume", "--stop-at", "6", "--fresh-lr-mult", "5")
    last = read_log(out, "lm")[-1]
    assert last["lr_fresh"] == pytest.approx(5 * last["lr"], rel=1e-3)

    plain = copy_tokenized(source, tmp_path / "plain")
    train_run("lm", plain, *command, "--stop-at", "1")  # one group: the log has one lr
    assert "lr_fresh" not in read_log(plain, "lm")[-1]
    with pytest.raises(SystemExit, match="fresh-lr-mult 10.*one learning rate"):
        train_run("lm", plain, *command, "--resume", "--fresh-lr-mult", "10")
    with pytest.raises(SystemExit, match="must be above 0"):
        train_run("lm", plain, *command, "--fresh-lr-mult", "0")
    assert set(before) < set(after)
