import shutil

import numpy as np
import pytest
import torch

from models.pipeline import TaskShapes, load_pipeline
from models.spec import Task
from models.train.lm import (
    TASK_WEIGHTS,
    changed_tokens,
    corrupt_outputs,
    lm_batch,
    lm_loss,
    new_tokens,
    task_weights,
)
from models.train.loop import Run
from tests.models.train.runs import copy_tokenized, read_log, train_run


def _cache(folder):
    return torch.load(folder / "train" / "lm_data.pt", weights_only=True)


def test_lm_steps_lower_the_loss(tmp_path, tokenized):
    folder = tmp_path / "run"
    shutil.copytree(tokenized, folder)
    run = Run(folder, "lm", "tiny")
    shapes = TaskShapes(run.config)
    layout = shapes.layouts()[Task.text_to_video]
    rng = np.random.default_rng(0)
    b = lm_batch(Task.text_to_video, _cache(folder), np.arange(6), layout, run.config.vocab,
                 shapes, rng)  # fmt: skip

    def loss():
        lm = load_pipeline(str(folder)).lm
        with torch.no_grad():
            return float(lm_loss(lm, b["batch"], run.config.vocab, b["text_len"]))

    before = loss()
    train_run("lm", folder, "--steps", "40", "--batch", "6", "--clips", "6", "--lr", "5e-3",
              "--resume")  # fmt: skip
    assert loss() < before - 0.5


def test_input_noise_changes_only_the_output_the_lm_reads_back(tokenized):
    """--input-noise: output tokens, as fed back to the LM, become random codes of their own
    kind at each row's rate; the task's input (prefix), the layout's fixed tokens and the
    targets stay, and a noisy input changes the loss."""
    run = Run(tokenized, "lm", "tiny")
    d = _cache(tokenized)
    shapes, vocab = TaskShapes(run.config), run.config.vocab
    lm = load_pipeline(str(tokenized)).lm
    for task in (Task.video_to_audio, Task.stylize):
        layout = shapes.layouts()[task]
        b = lm_batch(task, d, np.arange(3), layout, vocab, shapes, np.random.default_rng(0),
                     text_drop=0.0)  # fmt: skip
        batch = b["batch"]
        before = batch.ids.clone()
        g = torch.Generator().manual_seed(0)
        ids = corrupt_outputs(batch, vocab, torch.tensor([0.0, 0.5, 1.0]), g)
        assert torch.equal(batch.ids, before)  # the targets are not touched
        P = layout.prefix_len
        content = (torch.tensor(layout.structure) < 0) & (torch.arange(layout.length) >= P)
        assert torch.equal(ids[:, ~content], before[:, ~content])  # prefix and fixed tokens stay
        assert torch.equal(ids[0], before[0])  # rate 0: nothing changes
        changed = (ids != before)[:, content].float().mean(1)
        assert 0.3 < changed[1] < 0.7 and changed[2] > 0.95
        kinds = torch.tensor(layout.kinds)
        for kind in kinds[content].unique().tolist():
            lo, hi = vocab.code_range(kind)
            at = ids[:, content & (kinds == kind)]
            assert ((at >= lo) & (at < hi)).all()  # a random code of the same kind
        with torch.no_grad():
            clean = lm_loss(lm, batch, vocab, b["text_len"])
            noisy = lm_loss(lm, batch, vocab, b["text_len"], inputs=ids)
        assert float(clean) != pytest.approx(float(noisy), rel=1e-4)


def test_lm_loss_is_unchanged_by_cutting_text_padding(tokenized):
    run = Run(tokenized, "lm", "tiny")
    d = _cache(tokenized)
    shapes = TaskShapes(run.config)
    lm = load_pipeline(str(tokenized)).lm
    for task in (Task.video_to_audio, Task.inpaint):
        layout = shapes.layouts()[task]
        rng = np.random.default_rng(1)
        b = lm_batch(task, d, np.arange(4), layout, run.config.vocab, shapes, rng)
        with torch.no_grad():
            cut = lm_loss(lm, b["batch"], run.config.vocab, b["text_len"])
            full = lm_loss(lm, b["batch"], run.config.vocab, run.config.text_tokens)
        torch.testing.assert_close(cut, full, rtol=1e-4, atol=1e-4)


def test_changed_weight_counts_the_tokens_that_move_more(tokenized):
    """--changed-weight W: an output token that does not copy the previous latent frame's
    (frame 0's, and where something moved) counts W times in the LM's loss, in every video
    task; the copied ones count once."""
    run = Run(tokenized, "lm", "tiny")
    d = dict(_cache(tokenized))
    shapes = TaskShapes(run.config)
    vocab = run.config.vocab
    lm = load_pipeline(str(tokenized)).lm
    video = d["video"][:4].long()
    video[:, 1:] = video[:, :1]  # a still scene...
    last = video.shape[1] - 1
    # ...two tokens change last
    video[:, last, 0, :2] = (video[:, last, 0, :2] + 1) % vocab.visual_codes
    d["video"] = video.to(d["video"].dtype)
    assert int(changed_tokens(video).sum()) == 4 * 2
    per_frame = shapes.per_frame
    assert int(new_tokens(video).sum()) == 4 * (2 + per_frame)
    # the new tokens in each task's output: frame 0's are outputs of text_to_video and stylize
    new_out = {Task.text_to_video: 2 + per_frame, Task.stylize: 2 + per_frame,
               Task.image_to_video: 2, Task.continuation: 2}  # fmt: skip
    for task in new_out:
        layout = shapes.layouts()[task]

        def loss(w, task=task, layout=layout):
            rng = np.random.default_rng(3)
            b = lm_batch(task, d, np.arange(4), layout, vocab, shapes, rng, changed_weight=w)
            assert (b["visual_weight"] is None) == (w == 1)
            with torch.no_grad():
                return float(lm_loss(lm, b["batch"], vocab, b["text_len"], b["visual_weight"]))

        n = layout.segments["visual_out"].stop - layout.segments["visual_out"].start
        mean = {w: loss(w) for w in (1, 2, 5)}
        assert mean[5] != pytest.approx(mean[1], rel=1e-4)  # the weights land on some tokens...
        # ...on the new ones
        total = {w: mean[w] * 4 * (n + (w - 1) * new_out[task]) for w in mean}
        moved = total[2] - total[1]  # the CE on the new tokens
        assert moved > 0
        assert total[5] - total[1] == pytest.approx(4 * moved, rel=1e-3)


def test_task_weights_choose_the_tasks_an_lm_run_trains(tmp_path, tokenized):
    """--task-weights: 'task=w' changes a task's share, 0 leaves it out; a typo stops the run
    before anything is tokenized, naming the tasks it accepts."""
    weights = task_weights("video_to_audio=4, inpaint=0")
    assert weights[Task.video_to_audio] == 4 and weights[Task.inpaint] == 0
    assert weights[Task.text_to_video] == TASK_WEIGHTS[Task.text_to_video]
    copy_tokenized(tokenized, tmp_path)
    only = ",".join(f"{t.value}=0" for t in TASK_WEIGHTS if t != Task.stylize)
    train_run("lm", tmp_path, "--steps", "3", "--batch", "2", "--clips", "6", "--log-every", "1",
              "--task-weights", only)  # fmt: skip
    logged = {k for r in read_log(tmp_path, "lm") for k in r if k.startswith("loss_")}
    assert logged == {"loss_stylize"}
    for bad, message in (
        ("video_to_sound=2", "not task=weight"),
        ("inpaint=-1", "weight >= 0"),
        (only + ",stylize=0", "every task has weight 0"),
    ):
        with pytest.raises(SystemExit, match=message):
            train_run("lm", tmp_path / "other", "--steps", "1", "--task-weights", bad)
    assert not (tmp_path / "other").exists()
