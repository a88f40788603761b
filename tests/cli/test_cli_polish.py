"""CLI polish: `videopoet generate` shows a progress bar per stage; `videopoet train` and
`videopoet eval` hand their arguments to models.train / models.evaluate (their own options and
--help), and a user mistake prints one line and exits 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from tqdm import tqdm

from cli.main import EXIT_USAGE, StageBars, main


def test_train_shows_its_modules_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["train", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: videopoet train") and "--resume" in out and "--data" in out
    # The top-level help lists train and eval.
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "train" in out and "eval" in out


def test_train_on_a_missing_data_file_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "clips.jsonl"
    code = main(
        [
            "train",
            "video-tokenizer",
            "--config",
            "tiny",
            "--out",
            str(tmp_path / "run"),
            "--data",
            str(missing),
            "--steps",
            "1",
        ]
    )
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    lines = [line for line in err.splitlines() if "error" in line]
    assert lines and lines[-1].startswith("videopoet train: error:") and "clips.jsonl" in lines[-1]
    assert "Traceback" not in err


def test_generate_shows_a_bar_per_stage(capsys: pytest.CaptureFixture[str]) -> None:
    bars = StageBars(tqdm)
    # What the pipeline reports for text_to_video --with-audio.
    for fraction, stage in [
        (0.0, "text_to_video"),
        (0.3, "text_to_video"),
        (0.6, "text_to_video"),
        (0.7, "video_to_audio"),
        (0.9, "video_to_audio"),
        (1.0, "done"),
    ]:
        bars.progress(fraction, stage)
    bars.close()
    shown = [line.strip() for line in capsys.readouterr().err.replace("\r", "\n").splitlines()]
    stages = [line.split(":")[0] for line in shown if line]
    assert stages[0] == "text_to_video" and stages[-1] == "video_to_audio"
    assert set(stages) == {"text_to_video", "video_to_audio"}
    # Each bar goes on from where the one before stopped, and the last one reaches 100 %.
    assert any("60/100" in line for line in shown if line.startswith("text_to_video"))
    assert "100/100" in shown[-1]
