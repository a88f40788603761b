import numpy as np
import torch

from research import scale_probe as probe
from tests.models.train.runs import train_run


class _Exact:
    """A tokenizer whose codes are the frames themselves: it keeps everything."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return codes


def test_a_tokenizer_that_keeps_everything_scores_the_analysers_own_ceiling():
    result = probe.probe(_Exact(), 128, 6)
    assert result["psnr_db"] > 90  # the frames come back to the bit (the PSNR's cap)
    for name, _ in probe.READERS:
        assert result[f"{name}_kept"] == result[f"{name}_true"] == 1.0, name
    assert result["shape_frame0_kept"] == 1.0


def test_a_run_folder_with_only_its_video_tokenizer_is_probed_at_any_size(tmp_path, capsys):
    train_run("video-tokenizer", tmp_path, "--steps", "1", "--batch", "1")
    assert not (tmp_path / "audio_tokenizer.safetensors").exists()
    result = probe.main(["--model", str(tmp_path), "--size", "64", "--n", "3"])
    assert result["size"] == 64 and result["n"] == 3
    assert all(0 <= result[f"{name}_kept"] <= 1 for name, _ in probe.READERS)
    assert np.isfinite(result["psnr_db"]) and result["psnr_db"] < 90  # an untrained tokenizer
    assert capsys.readouterr().out.strip().startswith('{"size": 64')
