import numpy as np
import pytest

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
    rows = ev.main_eval(["--model", str(folder), "--n", "2", "--tasks", "tokenizers", "--threads", "1"])
    assert {row.task for row in rows} == {"video tokenizer", "audio tokenizer"}
    assert "reconstruction PSNR" in capsys.readouterr().out


def test_word_probe_swaps_one_attribute_and_reports_each_frame(capsys):
    """docs/word_probe.py: each variant changes only its attribute's words, and every variant
    gets a loss per latent frame (a tiny random LM, so only the shape of the answer is known)."""
    import importlib.util

    from models.pipeline import TaskShapes, load_pipeline
    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("word_probe", REPO / "docs" / "word_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    clip = av.generate_clip(3, split="train")
    for attribute in probe.ATTRIBUTES:
        swapped = probe.swap_words(clip, attribute, np.random.default_rng(0))
        assert swapped != clip.caption
        assert clip.labels["background"] in swapped

    result = probe.main(["--model", "tiny", "--n", "3"])
    frames = TaskShapes(load_pipeline("tiny").config).t_clip
    assert set(result) == {"own caption", "colour swapped", "shape swapped", "size swapped", "motion swapped",
                           "no caption", probe.TRAINED_ON}
    assert all(len(ce) == frames and np.isfinite(ce).all() for ce in result.values())
    assert not np.allclose(result["no caption"], result["own caption"])  # the text reaches the LM
    printed = capsys.readouterr().out
    assert "| motion swapped |" in printed and "| own |" in printed and f"| {probe.TRAINED_ON} |" in printed
    assert not np.allclose(result[probe.TRAINED_ON], result["own caption"])  # other clips, other losses


def test_condition_probe_scores_each_task_with_its_own_and_other_inputs(capsys):
    """docs/condition_probe.py: only the task's input is swapped (the scored output stays the
    clip's own), and every task gets a loss, a rise and a rank (a tiny random LM)."""
    import importlib.util

    import torch

    from models.pipeline import load_pipeline
    from models.spec import Task
    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("condition_probe", REPO / "docs" / "condition_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    pipe = load_pipeline("tiny")
    clips = [av.generate_clip(s, split="train") for s in range(3)]
    d = probe.tokenize(pipe, clips)
    source = np.array([1, 2, 0])
    context = pipe.shapes.t_context
    i2v = probe.with_input(d, Task.image_to_video, source, context)
    assert torch.equal(i2v["video"][:, :1], d["video"][source, :1])  # the first frame is another's
    assert torch.equal(i2v["video"][:, 1:], d["video"][:, 1:])  # what it must generate is its own
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


def test_audio_code_probe_reports_each_delay_and_level(capsys):
    """docs/audio_code_probe.py: a share of unchanged codes per RVQ level for every delay."""
    import importlib.util

    from models.pipeline import load_pipeline
    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("audio_code_probe", REPO / "docs" / "audio_code_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    result = probe.main(["--model", "tiny", "--n", "2"])
    levels = load_pipeline("tiny").config.audio.num_quantizers
    assert set(result) == set(probe.DELAYS)
    assert all(len(v) == levels and ((v >= 0) & (v <= 1)).all() for v in result.values())
    assert "| 8 samples (0.5 ms) |" in capsys.readouterr().out


def test_token_probe_reads_what_the_codes_hold_and_reports_every_attribute(capsys):
    """docs/token_probe.py: the probe finds a label the codes carry, and not one they lack;
    on `tiny` it prints a row per attribute."""
    import importlib.util

    import torch

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("token_probe", REPO / "docs" / "token_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    g = torch.Generator().manual_seed(0)
    labels = [["a", "b", "c"][i % 3] for i in range(150)]
    codes = torch.randint(3, 16, (150, 20), generator=g)
    codes[:, 0] = torch.tensor([i % 3 for i in range(150)])  # codes 0-2 name the label
    bag = probe.bags(codes, 16)
    assert torch.allclose(bag.sum(1), torch.ones(150))
    assert probe.probe_accuracy(bag, labels) == 1.0
    blind = probe.bags(torch.randint(0, 16, (150, 20), generator=g), 16)
    assert probe.probe_accuracy(blind, labels) < 0.6
    result = probe.main(["--model", "tiny", "--n", "20"])
    assert set(result) == set(probe.ATTRIBUTES)
    assert all(0 <= acc <= 1 and 0 < chance <= 1 for acc, chance in result.values())
    assert "| shape | video |" in capsys.readouterr().out

    # the grid probe reads an arrangement that every bag of codes hides: the same two codes,
    # side by side (label a) or one above the other (label b), anywhere on a 6 x 6 grid
    grid = -torch.ones(200, 2, 6, 6)
    labels = []
    for i in range(200):
        y, x = (int(v) for v in torch.randint(0, 5, (2,), generator=g))
        dy, dx = (0, 1) if i % 2 == 0 else (1, 0)
        grid[i, 0, y, x] = grid[i, 1, y + dy, x + dx] = 1
        labels.append("ab"[i % 2])
    flat = ((grid[:, 0] > 0) * 1 + (grid[:, 1] > 0) * 2).flatten(1)
    assert probe.probe_accuracy(probe.bags(flat, 3), labels) < 0.7
    assert probe.grid_probe_accuracy(grid, labels, epochs=30, width=16) > 0.9
    result = probe.main(["--model", "tiny", "--n", "20", "--grid"])
    assert {"shape (grid)", "colour (grid)"} <= set(result)
    assert "| shape (grid) | video, grid |" in capsys.readouterr().out


def test_placement_probe_reads_the_start_and_the_motion_of_each_prompt(capsys):
    """docs/placement_probe.py: the start test agrees with shapes_av's boxes on true clips, and a
    run prints a row per prompted motion (a tiny random LM, so only the shape of the answer)."""
    import importlib.util

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("placement_probe", REPO / "docs" / "placement_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    for s in range(6):
        clip = av.generate_clip(s, split="train")
        lab = clip.labels
        assert probe.start_fits(clip.frames[0], lab["size"], lab["motion"], 1.0)  # its own box
        if lab["motion"] in ("left", "right"):
            other = "right" if lab["motion"] == "left" else "left"
            assert not probe.start_fits(clip.frames[0], lab["size"], other, 1.0)
    assert probe.chance_of_fit("large", "still") == 1.0
    assert 0.2 < probe.chance_of_fit("large", "left") < 0.6

    table = probe.main(["--model", "tiny", "--n", "4"])
    assert sum(r["clips"] for k, r in table.items() if k != probe.MOVING) == 4
    assert all(0 <= r["start fits"] <= 1 and 0 <= r["motion right"] <= 1 for r in table.values())
    assert "| prompted motion |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no grid"):  # tiny has no grid tables to zero
        probe.main(["--model", "tiny", "--n", "1", "--without", "grid"])
