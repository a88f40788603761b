"""Data-parallel training under torchrun, on the CPU: 2 processes with the gloo backend.

The tolerance: N processes with the same global batch train on the same examples as one, and
DDP averages their gradients, so the logged losses of the LM (a mean over rows of equal
length) match one process's to rtol 1e-4 (measured: equal to the 5 decimals logged, tiny LM,
6 steps). The video tokenizer's LFQ entropy term and the audio tokenizer's spectral
convergence are batch statistics, computed per process: their losses are close, not equal.
The torchrun runs here take about 35 s on 2 CPU cores.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from models.pipeline import ModelConfig
from models.train import distributed
from models.train.cli import _run_stage, build_parser
from models.train.data import ShapesAVData
from models.train.errors import TrainingError
from models.train.video_tokenizer import video_batch
from tests.models.train.runs import copy_tokenized, read_log, train_run

TOLERANCE = dict(rel=1e-4, abs=1e-5)
LM_ARGS = ("--steps", "4", "--batch", "4", "--clips", "6", "--log-every", "1")


def torchrun(out, *extra: str, stage: str = "lm") -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node 2 -m models.train STAGE --config tiny --out OUT ...` on gloo."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", "2", "-m", "models.train", stage, "--config", "tiny",
           "--out", str(out), "--threads", "1", "--device", "cpu", *extra]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def single(tmp_path_factory, tokenized):
    """The LM trained 4 steps at global batch 4 in one process."""
    out = copy_tokenized(tokenized, tmp_path_factory.mktemp("single"))
    train_run("lm", out, *LM_ARGS)
    return out


def test_two_processes_train_as_one_with_the_same_global_batch_and_resume(
    tmp_path, tokenized, single
):
    out = copy_tokenized(tokenized, tmp_path)
    torchrun(out, *LM_ARGS, "--stop-at", "2")
    torchrun(out, *LM_ARGS, "--resume")  # continues from step 2, under torchrun

    two, one = read_log(out, "lm"), read_log(single, "lm")
    assert [r["step"] for r in two] == [1, 2, 3, 4]
    assert {r["world_size"] for r in two} == {2} and {r["world_size"] for r in one} == {1}
    assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in one], **TOLERANCE)
    # one checkpoint, written once (rank 0), no per-rank copies
    assert sorted(p.name for p in (out / "train").iterdir()) == ["lm.jsonl", "lm.pt", "lm_data.pt"]
    assert torch.load(out / "train" / "lm.pt", weights_only=True)["step"] == 4
    a, b = load_file(str(out / "lm.safetensors")), load_file(str(single / "lm.safetensors"))
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_an_fsdp_checkpoint_resumes_in_one_process_and_back(tmp_path, tokenized, single):
    """--fsdp shards the LM across the processes; its checkpoint is whole: one process resumes
    it, FSDP resumes that one's, and the run ends where the single-process run does."""
    out = copy_tokenized(tokenized, tmp_path)
    torchrun(out, *LM_ARGS, "--stop-at", "2", "--fsdp")
    assert torch.load(out / "train" / "lm.pt", weights_only=True)["step"] == 2
    train_run("lm", out, *LM_ARGS, "--resume", "--stop-at", "3")
    torchrun(out, *LM_ARGS, "--resume", "--fsdp")
    two, one = read_log(out, "lm"), read_log(single, "lm")
    assert [r["world_size"] for r in two] == [2, 2, 1, 2]
    assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in one], **TOLERANCE)


@pytest.mark.parametrize("stage", ["video-tokenizer", "audio-tokenizer"])
def test_the_tokenizers_train_under_torchrun(stage, tmp_path):
    """DDP around the convolutional tokenizers (and the audio codebooks' EMA, kept in step
    across the processes): they train and write one checkpoint. Their losses hold batch
    statistics computed per process, so they are not compared with one process's."""
    torchrun(tmp_path, "--steps", "2", "--batch", "2", "--log-every", "1", stage=stage)
    component = stage.replace("-", "_")
    log = read_log(tmp_path, component)
    assert [r["step"] for r in log] == [1, 2] and {r["world_size"] for r in log} == {2}
    assert log[1]["loss"] < log[0]["loss"] * 1.5
    names = sorted(p.name for p in (tmp_path / "train").iterdir())
    assert names == [f"{component}.jsonl", f"{component}.pt"]
    assert (tmp_path / f"{component}.safetensors").is_file()


@pytest.fixture
def two_ranks(monkeypatch):
    """This process as rank `r` of 2, without a process group (for what needs none)."""

    def rank(r: int) -> None:
        monkeypatch.setattr(distributed, "_world", distributed.World(rank=r, size=2))

    return rank


def test_each_rank_takes_its_own_half_of_the_global_batch(two_ranks):
    card = ModelConfig.from_name("tiny").card
    data = ShapesAVData(card, size=50)
    whole = video_batch(data, card, 1, 4, np.random.default_rng([0, 3]))
    halves = []
    for r in (0, 1):
        two_ranks(r)
        halves.append(video_batch(data, card, 1, 4, np.random.default_rng([0, 3])))
    assert halves[0].shape[0] == halves[1].shape[0] == 2
    assert not torch.equal(halves[0], halves[1])  # different clips
    assert torch.equal(torch.cat(halves), whole)  # together: one process's batch
    assert distributed.shard(4) == range(2, 4)  # the LM's rows of a global batch, rank 1


def test_a_global_batch_that_does_not_split_evenly_is_refused(two_ranks, tmp_path):
    two_ranks(0)
    args = build_parser().parse_args(["lm", "--out", str(tmp_path), "--batch", "3"])
    with pytest.raises(TrainingError, match="--batch 3 is the global batch.*multiple of 2"):
        _run_stage(args)
    args = build_parser().parse_args(
        ["video-tokenizer", "--out", str(tmp_path), "--adversarial-weight", "0.1"]
    )
    with pytest.raises(TrainingError, match="--adversarial-weight is not supported under torchrun"):
        _run_stage(args)
    assert not (tmp_path / "config.json").exists()  # refused before anything was written
