import numpy as np

from models import evaluate as ev
from models import shapes_av as av

EXPECTED_ROWS = [
    ("video tokenizer", "reconstruction PSNR"),
    ("video tokenizer", "size kept"),
    ("audio tokenizer", "reconstruction PSNR"),
    ("text_to_video", "colour accuracy"),
    ("text_to_video", "shape accuracy"),
    ("text_to_video", "size accuracy"),
    ("text_to_video", "motion accuracy"),
    ("text_to_video", "background accuracy"),
    ("text_to_video", "colour, training colour names"),
    ("text_to_video", "colour, held-out colour names"),
    ("text_to_video", "motion, held-out phrasings"),
    ("text_to_video", "motion, + held-out style words"),
    ("text_to_image", "colour accuracy"),
    ("image_to_video", "first-frame PSNR"),
    ("image_to_video", "motion accuracy"),
    ("continuation", "motion kept (new frames)"),
    ("inpaint", "masked-region PSNR"),
    ("outpaint", "masked-region PSNR"),
    ("stylize", "motion preserved"),
    ("stylize", "new colour matched"),
    ("video_to_audio", "timbre accuracy"),
    ("video_to_audio", "pitch-contour correlation"),
    ("audio_to_video", "shape accuracy"),
    ("audio_to_video", "vertical-motion accuracy"),
]


def test_eval_on_tiny_prints_every_row(capsys):
    rows = ev.main_eval(["--model", "tiny", "--n", "2", "--threads", "1"])
    printed = capsys.readouterr().out
    for task, metric in EXPECTED_ROWS:
        assert any(
            line.startswith(f"| {task} ") and metric in line for line in printed.splitlines()
        ), (task, metric)
    assert len(rows) == len(printed.strip().splitlines()) - 3  # header line, table head, rule
    for row in rows:
        assert np.isfinite(row.chance)


def test_a_blank_output_scores_as_wrong():
    blank = np.full((17, 64, 64, 3), 118, np.uint8)
    assert ev.dominant_colour(blank) is None
    assert ev.classify_shape(blank) is None
    assert ev.classify_motion(blank) is None
    assert ev.classify_timbre(np.zeros(av.SAMPLES, np.float32)) is None


def test_psnr_rows_compare_like_with_like():
    clip = av.generate_clip(0)
    assert ev.psnr(clip.frames, clip.frames) == 99.0
    noisy = np.clip(clip.frames.astype(int) + 8, 0, 255).astype(np.uint8)
    assert 28 < ev.psnr(clip.frames, noisy) < 31
    assert ev.audio_psnr(clip.audio, clip.audio) == 99.0


def test_tokenizers_score_mid_training_before_there_is_an_lm(tmp_path, capsys):
    from models.pipeline import load_pipeline

    folder = load_pipeline("tiny").save(tmp_path / "ckpt")
    (folder / "lm.safetensors").unlink()  # the LM stage has not run yet
    rows = ev.main_eval(
        ["--model", str(folder), "--n", "2", "--tasks", "tokenizers", "--threads", "1"]
    )
    assert {row.task for row in rows} == {"video tokenizer", "audio tokenizer"}
    assert "reconstruction PSNR" in capsys.readouterr().out
