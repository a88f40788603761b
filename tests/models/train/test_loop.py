import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from models.pipeline import TaskShapes, load_pipeline
from models.spec import Task, TaskSpec
from models.train.errors import TrainingError
from models.train.lm import lm_batch, lm_loss
from models.train.loop import Run, load_matching, lr_at
from tests.models.train.runs import copy_tokenized, read_log, train_run


def test_lr_warms_up_then_falls_to_a_tenth():
    assert lr_at(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(100, 100, 1.0, 10) == pytest.approx(0.1)
    assert lr_at(10, 100, 1.0, 10) > lr_at(50, 100, 1.0, 10) > lr_at(90, 100, 1.0, 10)


def test_resume_continues_from_the_saved_step(tmp_path, tokenized):
    copy_tokenized(tokenized, tmp_path)
    straight = tmp_path / "straight"
    shutil.copytree(tmp_path, straight)

    train_run("lm", tmp_path, "--steps", "6", "--stop-at", "3", "--batch", "2", "--clips", "6",
              "--log-every", "1")  # fmt: skip
    with pytest.raises(SystemExit, match="--resume"):  # an existing run is never overwritten
        train_run("lm", tmp_path, "--steps", "6", "--batch", "2", "--clips", "6")
    train_run("lm", tmp_path, "--steps", "6", "--batch", "2", "--clips", "6", "--log-every", "1",
              "--resume")  # fmt: skip
    assert [r["step"] for r in read_log(tmp_path, "lm")] == [1, 2, 3, 4, 5, 6]
    state = torch.load(tmp_path / "train" / "lm.pt", weights_only=True)
    assert state["step"] == 6

    # the resumed run ends where an uninterrupted one does
    train_run("lm", straight, "--steps", "6", "--batch", "2", "--clips", "6", "--log-every", "1")
    a, b = load_file(str(tmp_path / "lm.safetensors")), load_file(str(straight / "lm.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    assert [r["loss"] for r in read_log(straight, "lm")] == pytest.approx(
        [r["loss"] for r in read_log(tmp_path, "lm")]
    )


def _lm_step_from(tokenized, out, **lm_changes):
    """A run folder `out` with `tokenized`'s tokenizers, token cache and config (its LM's with
    `lm_changes`), after one LM step --init-from `tokenized` at a vanishing learning rate:
    (the source LM's tensors, the new ones)."""
    copy_tokenized(tokenized, out)
    config = json.loads((tokenized / "config.json").read_text())
    config["lm"].update(lm_changes)
    (out / "config.json").write_text(json.dumps(config))
    train_run("lm", out, "--steps", "1", "--batch", "2", "--clips", "6", "--lr", "1e-9",
              "--init-from", str(tokenized))  # fmt: skip
    return load_file(str(tokenized / "lm.safetensors")), load_file(str(out / "lm.safetensors"))


def test_init_from_starts_a_new_run_from_another_folders_weights(tmp_path, tokenized):
    """--init-from DIR: fine-tuning starts from DIR's weights, not from a fresh init; a run
    with saved state resumes from that state instead."""
    source, tuned = _lm_step_from(tokenized, tmp_path)
    for k in source:  # one step at a vanishing learning rate: still the source's weights
        torch.testing.assert_close(tuned[k], source[k], rtol=1e-4, atol=1e-5)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for name in ("config.json", "video_tokenizer.safetensors", "audio_tokenizer.safetensors"):
        shutil.copy(tmp_path / name, fresh / name)
    shutil.copytree(tmp_path / "train", fresh / "train")
    (fresh / "train" / "lm.pt").unlink()
    train_run("lm", fresh, "--steps", "1", "--batch", "2", "--clips", "6", "--lr", "1e-9")
    scratch = load_file(str(fresh / "lm.safetensors"))
    assert any(not torch.allclose(scratch[k], source[k], atol=1e-3) for k in source)
    with pytest.raises(SystemExit, match="does not exist"):
        train_run(
            "lm", tmp_path / "other", "--steps", "1", "--init-from", str(tmp_path / "nowhere")
        )


def test_a_file_of_another_stage_fits_nothing(tokenized):
    with pytest.raises(TrainingError, match="no tensor"):
        load_matching(torch.nn.Linear(3, 3), str(tokenized / "lm.safetensors"))


@pytest.mark.parametrize(
    ("switch", "tensors"),
    [
        ("text_global", ["text_global.weight"]),
        ("grid_positions", ["grid.0.weight", "grid.1.weight", "grid.2.weight"]),
    ],
)
def test_a_path_added_to_a_trained_lm_starts_silent_and_is_learnt(
    tmp_path, tokenized, switch, tensors
):
    """ "text_global" (the caption path) or "grid_positions" (where each visual token is in the
    frame) switched on in a folder's LM config, fine-tuned --init-from an LM without it: the new
    tensors start at zero (the run starts from the old LM's predictions), are trained, and the
    loss and the generated tokens use them."""
    source, first = _lm_step_from(tokenized, tmp_path, **{switch: True})
    assert set(first) == set(source) | set(tensors)
    assert all(first[k].abs().max() < 1e-6 for k in tensors)  # silent: the old LM's predictions
    train_run("lm", tmp_path, "--steps", "30", "--batch", "6", "--clips", "6", "--lr", "5e-3",
              "--resume")  # fmt: skip
    trained = load_file(str(tmp_path / "lm.safetensors"))
    assert all(trained[k].abs().max() > 1e-3 for k in tensors)

    pipe = load_pipeline(str(tmp_path))
    run = Run(tmp_path, "lm", "tiny")
    d = torch.load(tmp_path / "train" / "lm_data.pt", weights_only=True)
    shapes = TaskShapes(run.config)
    vocab = run.config.vocab
    layout = shapes.layouts()[Task.text_to_video]
    rng = np.random.default_rng(0)
    b = lm_batch(Task.text_to_video, d, np.arange(6), layout, vocab, shapes, rng, text_drop=0.0)
    spec = TaskSpec(
        task=Task.text_to_video, prompt="a small red circle moving left", seed=3, guidance_scale=1.0
    )
    with torch.no_grad():
        used = float(lm_loss(pipe.lm, b["batch"], vocab, b["text_len"]))
        made = pipe.generate([spec])[0].frames
        pipe.lm.clear_caches()  # lm_loss runs the model without a KV cache
        for name, p in pipe.lm.named_parameters():
            if name in tensors:
                p.zero_()
        silent = float(lm_loss(pipe.lm, b["batch"], vocab, b["text_len"]))
        unmade = pipe.generate([spec])[0].frames
    assert used != pytest.approx(silent, rel=1e-4)
    assert not np.array_equal(made, unmade)  # same seed: only the new tensors differ
