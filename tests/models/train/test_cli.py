import re

import pytest
import torch

from models.train import TrainingError, build_parser, init_path, main_train, run_stage
from models.train.lm import TASK_WEIGHTS, task_weights

LM_ONLY = ("--clips", "--task-weights", "--changed-weight", "--input-noise")
VIDEO_ONLY = ("--crop-frames", "--image-batch", "--decoder-only", "--adversarial-weight")
AUDIO_ONLY = ("--crop-seconds", "--wave-weight", "--shift-weight")
EVERY = ("--out", "--config", "--resume", "--data", "--steps", "--init-from", "--seed")


def _help(capsys, *argv):
    with pytest.raises(SystemExit) as exited:
        main_train([*argv, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def test_each_stage_lists_only_its_own_flags(capsys):
    own = {"video-tokenizer": VIDEO_ONLY, "audio-tokenizer": AUDIO_ONLY, "lm": LM_ONLY}
    for stage, flags in own.items():
        text = _help(capsys, stage)
        assert text.startswith(f"usage: videopoet train {stage}")
        assert all(flag in text for flag in flags + EVERY), stage
        others = {f for s, fs in own.items() if s != stage for f in fs}
        assert not [f for f in others if f in text], stage
    text = _help(capsys)  # no stage: the stages, and the flags every one takes
    assert all(stage in text for stage in own) and "--resume" in text and "--data" in text


def test_existing_commands_still_parse():
    """The Makefile's demo-checkpoint recipe, flag for flag."""
    parser = build_parser()
    args = parser.parse_args(
        "video-tokenizer --config demo --out out/demo --resume --steps 20000 --batch 4 "
        "--image-batch 16 --foreground-weight 10 --foreground-margin 2 --chroma-weight 1 "
        "--entropy-tokens foreground --entropy-weight 0.05 --threads 1 --max-minutes 60".split()
    )
    assert (args.stage, args.image_batch, args.entropy_weight) == ("video-tokenizer", 16, 0.05)
    assert args.foreground_margin == 2
    args = parser.parse_args(
        "lm --config demo --out out/demo --resume --steps 10000 --batch 8 --clips 800 "
        "--lr 2e-3 --max-minutes 60".split()
    )
    assert (args.clips, args.lr, args.task_weights, args.seed) == (800, 2e-3, "", 0)
    with pytest.raises(SystemExit):  # an LM flag is not a tokenizer's
        parser.parse_args(["video-tokenizer", "--out", "x", "--clips", "5"])


def test_a_mistake_is_one_line_through_main_train_and_an_exception_below(tmp_path):
    """The library raises TrainingError; main_train turns it into a one-line exit message,
    before the run folder is made."""
    nowhere = str(tmp_path / "nowhere")
    out = tmp_path / "run"
    cases = [
        (["lm", "--out", str(out), "--init-from", nowhere], "--init-from: "),
        (["lm", "--out", str(out), "--task-weights", "video_to_sound=2"], "not task=weight"),
        (["video-tokenizer", "--out", str(out), "--crop-frames", "6"], "4k+1"),
        (["video-tokenizer", "--out", str(out), "--foreground-margin", "2"], "--foreground-weight"),
        (["sr", "--out", str(out), "--low-degrade", "1.5"], "--low-degrade is a share from 0 to 1"),
        (["sr", "--out", str(out), "--object-weight", "-1"], "--object-weight must be 0 or more"),
    ]
    if not torch.cuda.is_available():
        cases.append((["audio-tokenizer", "--out", str(out), "--device", "cuda"], "--device: "))
    for argv, says in cases:
        with pytest.raises(SystemExit) as exited:
            main_train(argv)
        message = exited.value.code
        assert isinstance(message, str) and "\n" not in message, argv
        assert message.startswith(f"videopoet train {argv[0]}: error: ") and says in message
        with pytest.raises(TrainingError, match=re.escape(says.strip())):
            run_stage(build_parser().parse_args(argv))
    assert not out.exists()
    with pytest.raises(TrainingError, match="does not exist"):
        init_path(nowhere, "lm")
    with pytest.raises(TrainingError, match="every task has weight 0"):
        task_weights(",".join(f"{t.value}=0" for t in TASK_WEIGHTS))
