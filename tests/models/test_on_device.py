"""The model paths a GPU changes, run on the best device present: CUDA when torch sees one,
else the CPU (these are not skipped there). `benchmarks/gpu_check.py` runs them on a GPU
machine: the bfloat16 LM, the compiled decode step (CUDA graphs under torch.compile's
reduce-overhead on CUDA) and a training step under autocast."""

import numpy as np
import pytest
import torch

from models.generate import (
    SamplingParams,
    compile_decode_step,
    decode_one_token_static,
    generate_tokens,
)
from models.lm import prefix_mask
from models.pipeline import load_pipeline
from models.spec import Task, TaskSpec
from models.vocab import assemble

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def float32():
    return load_pipeline("tiny", device=DEVICE, dtype="float32")


def _batch(p, rows: int = 2):
    layout = p.layouts[Task.text_to_image]
    g = torch.Generator().manual_seed(0)
    return layout, assemble(
        layout,
        p.vocab,
        text=torch.randn(rows, p.config.text_tokens, 384, generator=g),
        text_mask=torch.ones(rows, p.config.text_tokens, dtype=torch.bool),
    )


def test_the_bfloat16_lm_predicts_what_the_float32_lm_does(float32):
    """bfloat16 (the LM's dtype on CUDA) keeps the float32 LM's predictions and samples a whole
    request on the device."""
    bf16 = load_pipeline("tiny", device=DEVICE, dtype="bfloat16")
    assert bf16.lm.output.weight.dtype == torch.bfloat16
    assert bf16.lm.output.weight.device.type == DEVICE
    layout, batch = _batch(float32)
    ids = batch.ids.clamp_min(0).to(DEVICE)  # the free output positions: any code
    pos = torch.arange(ids.shape[1], device=DEVICE)
    mask = prefix_mask(batch.key_valid.to(DEVICE), layout.prefix_len)
    logits = []
    with torch.no_grad():
        for p, dt in ((float32, torch.float32), (bf16, torch.bfloat16)):
            x = p.lm.embed(ids, batch.text.to(DEVICE, dt), layout.text_slice)
            logits.append(p.lm.logits(p.lm(x, pos, mask)).float())
    # bfloat16 keeps 8 bits of mantissa: the logits move by a few hundredths, the ranking stays
    assert (logits[0] - logits[1]).abs().max() < 0.1  # measured 0.005 on CPU
    agree = (logits[0].argmax(-1) == logits[1].argmax(-1)).float().mean()
    assert agree > 0.9
    spec = TaskSpec(task=Task.text_to_image, prompt="a red ball", seed=3)
    result = bf16.generate(spec)
    assert result.frames.shape[1:] == (bf16.card.height, bf16.card.width, 3)
    assert result.frames.dtype == np.uint8


def test_the_compiled_decode_step_samples_what_the_eager_one_does(float32):
    """VIDEOPOET_COMPILE=1's step (CUDA graphs on CUDA) gives the eager sampler's tokens."""
    if DEVICE == "cpu":  # inductor's C++ build is slow on a small CPU: trace it, run eagerly
        step = torch.compile(decode_one_token_static, backend="eager", fullgraph=True)
    else:
        step = compile_decode_step()
    _, batch = _batch(float32)
    params = SamplingParams.for_rows([1, 2], [1.0, 1.0], [None] * 2, [None] * 2, [1.0] * 2, DEVICE)
    eager = generate_tokens(float32.lm, float32.vocab, batch, params)
    params = SamplingParams.for_rows([1, 2], [1.0, 1.0], [None] * 2, [None] * 2, [1.0] * 2, DEVICE)
    compiled = generate_tokens(float32.lm, float32.vocab, batch, params, static_step=step)
    assert compiled.shape == eager.shape
    assert (compiled == eager).float().mean() > 0.95  # sampled: a near tie may flip a token
