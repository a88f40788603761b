from models.pipeline import load_pipeline
from research import audio_code_probe as probe


def test_audio_code_probe_reports_each_delay_and_level(capsys):
    """A share of unchanged codes per RVQ level for every delay."""
    result = probe.main(["--model", "tiny", "--n", "2"])
    levels = load_pipeline("tiny").config.audio.num_quantizers
    assert set(result) == set(probe.DELAYS)
    assert all(len(v) == levels and ((v >= 0) & (v <= 1)).all() for v in result.values())
    assert "| 8 samples (0.5 ms) |" in capsys.readouterr().out
