"""VIDEOPOET_QUANTIZE=int8: int8 weight-only LM layers (models/quantize.py)."""

import copy

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from core.config import Settings
from models.lm import prefix_mask
from models.pipeline import load_pipeline
from models.quantize import Int8Linear, quantize_lm, weight_bytes
from models.spec import Task, TaskSpec
from workers import runtime


def test_an_int8_layer_is_its_float_layer_within_half_a_step_per_weight() -> None:
    torch.manual_seed(0)
    dense = nn.Linear(96, 40, bias=False)
    q = Int8Linear.from_linear(dense)
    assert q.weight_int8.dtype == torch.int8
    # a quarter of the float bytes, plus one float32 scale per output row
    assert weight_bytes(q) == 96 * 40 + 40 * 4 == weight_bytes(dense) // 4 + 40 * 4
    x = torch.randn(5, 96)
    exact = dense(x)
    got = q(x)
    # each weight is off by at most half its row's step: |error| <= sum_k |x_k| * scale / 2
    bound = x.abs().sum(1, keepdim=True) * q.scales[None, :] / 2
    assert ((got - exact).abs() <= bound + 1e-5).all()
    assert (got - exact).abs().max() > 0  # it is quantized, not the float layer again
    torch.testing.assert_close(q(x, 10, 30), got[:, 10:30])


@pytest.fixture(scope="module")
def demo_lms():
    pipe = load_pipeline("demo")
    return pipe, pipe.lm, quantize_lm(copy.deepcopy(pipe.lm), "int8")


@torch.no_grad()
def test_the_int8_demo_lm_predicts_what_the_float_one_does(demo_lms) -> None:
    pipe, dense, q = demo_lms
    assert isinstance(q.output, Int8Linear)
    assert all(isinstance(b.ffn.w2, Int8Linear) for b in q.layers)
    assert isinstance(q.text_proj, nn.Linear)  # the caption path stays float
    assert weight_bytes(q) < 0.45 * weight_bytes(dense)

    layout = pipe.layouts[Task.text_to_video]
    torch.manual_seed(0)
    B, S, P = 4, layout.length, layout.prefix_len
    ids = torch.randint(0, 2048, (B, S))
    text = torch.randn(B, layout.text_slice.stop - layout.text_slice.start, 384)
    mask = prefix_mask(torch.ones(B, S, dtype=torch.bool), P)
    logits = [
        m.logits(m(m.embed(ids, text, layout.text_slice), torch.arange(S), mask))[:, P - 1 : -1]
        for m in (dense, q)
    ]
    agree = (logits[0].argmax(-1) == logits[1].argmax(-1)).float().mean()
    tv = 0.5 * (logits[0].softmax(-1) - logits[1].softmax(-1)).abs().sum(-1)
    assert agree >= 0.9, f"the int8 LM's most likely token is the float one's {agree:.0%}"
    assert tv.mean() <= 0.03, f"mean total variation {tv.mean():.3f} between the two"
    # a range of ids scores as the whole head does
    h = torch.randn(2, 3, q.config.dim)
    torch.testing.assert_close(q.logits(h, 100, 900), q.logits(h)[..., 100:900])


def test_the_setting_reaches_the_worker_pipeline_and_it_generates(monkeypatch) -> None:
    monkeypatch.delenv("VIDEOPOET_PIPELINE_FACTORY", raising=False)
    pipe, _ = runtime.load_pipeline(Settings(model="tiny", device="cpu", quantize="int8"))
    assert pipe.quantize == "int8" and isinstance(pipe.lm.output, Int8Linear)
    spec = TaskSpec(task=Task.text_to_video, prompt="a red circle moves left", seed=3)
    first, again = pipe.generate(spec), pipe.generate(spec)
    assert first.frames.shape == (17, pipe.card.height, pipe.card.width, 3)
    assert (first.frames == again.frames).all()  # same seed, same video


def test_an_unknown_quantization_is_refused_with_the_accepted_ones(monkeypatch) -> None:
    monkeypatch.setenv("VIDEOPOET_QUANTIZE", "int4")
    with pytest.raises(ValidationError) as e:
        Settings()
    assert "quantize" in str(e.value) and "'none'" in str(e.value) and "'int8'" in str(e.value)
    with pytest.raises(ValueError, match="none, int8"):
        load_pipeline("tiny", quantize="fp8")
