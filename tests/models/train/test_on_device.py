"""A training step of each stage on the best device present: CUDA (bfloat16 autocast) when
torch sees one, else the CPU. `benchmarks/gpu_check.py` runs it on a GPU machine."""

import math

import pytest
import torch
from safetensors.torch import load_file

from models.train.loop import autocast
from tests.models.train.runs import copy_tokenized, read_log, train_run

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def test_autocast_is_bfloat16_on_cuda_and_off_on_the_cpu():
    x = torch.randn(4, 4, device=DEVICE)
    with autocast(DEVICE):
        y = x @ x
    assert y.dtype == (torch.bfloat16 if DEVICE == "cuda" else torch.float32)


@pytest.mark.parametrize("stage", ["video-tokenizer", "audio-tokenizer", "lm"])
def test_a_training_step_on_the_device_matches_float32_on_the_cpu(stage, tmp_path, tokenized):
    """Two steps under the device's autocast train as float32 does on the CPU (bfloat16 moves
    the loss by well under 5 %) and write float32 weights."""
    runs = {}
    for name, device in (("reference", "cpu"), ("device", DEVICE)):
        out = copy_tokenized(tokenized, tmp_path / name)
        extra = ("--clips", "6") if stage == "lm" else ()
        train_run(stage, out, "--steps", "2", "--batch", "2", "--log-every", "1",
                  "--device", device, *extra)  # fmt: skip
        runs[name] = out
    component = stage.replace("-", "_")
    cpu, dev = read_log(runs["reference"], component), read_log(runs["device"], component)
    assert all(math.isfinite(r["loss"]) for r in dev)
    assert dev[0]["loss"] == pytest.approx(cpu[0]["loss"], rel=0.05)
    weights = load_file(str(runs["device"] / f"{component}.safetensors"))
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float32}
