import numpy as np

from models import shapes_av as av
from models.pipeline import TaskShapes, load_pipeline
from research import word_probe as probe


def test_word_probe_swaps_one_attribute_and_reports_each_frame(capsys):
    """Each variant changes only its attribute's words, and every variant gets a loss per
    latent frame (a tiny random LM, so only the shape of the answer is known)."""
    clip = av.generate_clip(3, split="train")
    for attribute in probe.ATTRIBUTES:
        swapped = probe.swap_words(clip, attribute, np.random.default_rng(0))
        assert swapped != clip.caption
        assert clip.labels["background"] in swapped

    result = probe.main(["--model", "tiny", "--n", "3"])
    frames = TaskShapes(load_pipeline("tiny").config).t_clip
    variants = {"own caption", "colour swapped", "shape swapped", "size swapped",
                "motion swapped", "no caption", probe.TRAINED_ON}  # fmt: skip
    assert set(result) == variants
    assert all(len(ce) == frames and np.isfinite(ce).all() for ce in result.values())
    assert not np.allclose(result["no caption"], result["own caption"])  # the text reaches the LM
    printed = capsys.readouterr().out
    assert "| motion swapped |" in printed and "| own |" in printed
    assert f"| {probe.TRAINED_ON} |" in printed
    # other clips, other losses
    assert not np.allclose(result[probe.TRAINED_ON], result["own caption"])
