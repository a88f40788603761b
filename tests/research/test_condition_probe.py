import numpy as np
import pytest
import torch

from models import shapes_av as av
from models.pipeline import load_pipeline
from models.spec import Task
from research import condition_probe as probe


def test_condition_probe_scores_each_task_with_its_own_and_other_inputs(capsys):
    """Only the task's input is swapped (the scored output stays the clip's own), and every
    task gets a loss, a rise and a rank (a tiny random LM)."""
    pipe = load_pipeline("tiny")
    clips = [av.generate_clip(s, split="train") for s in range(3)]
    d = probe.tokenize(pipe, clips)
    source = np.array([1, 2, 0])
    context = pipe.shapes.t_context
    i2v = probe.with_input(d, Task.image_to_video, source, context)
    # the first frame is another's; what it must generate is its own
    assert torch.equal(i2v["video"][:, :1], d["video"][source, :1])
    assert torch.equal(i2v["video"][:, 1:], d["video"][:, 1:])
    cont = probe.with_input(d, Task.continuation, source, context)
    assert torch.equal(cont["video"][:, context:], d["video"][:, context:])
    v2a = probe.with_input(d, Task.video_to_audio, source, context)
    assert torch.equal(v2a["audio"], d["audio"]) and torch.equal(v2a["video"], d["video"][source])

    result = probe.main(["--model", "tiny", "--n", "3", "--others", "2"])
    assert set(result) == {t.value for t in probe.INPUTS} | {"text_to_video (motion only)"}
    for r in result.values():
        assert np.isfinite([r["own"], r["rise"]]).all() and 0 <= r["rank1"] <= 1
    assert result["image_to_video"]["chance"] == pytest.approx(1 / 3)
    assert result["text_to_video (motion only)"]["chance"] == pytest.approx(1 / 6)
    assert "| video_to_audio (video) |" in capsys.readouterr().out
