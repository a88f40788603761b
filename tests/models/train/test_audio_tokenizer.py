import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from models import shapes_av as av
from models.audio_tokenizer import AudioTokenizer
from models.pipeline import ModelConfig
from models.train.audio_tokenizer import shift_distance
from tests.models.train.runs import read_log, train_run


def test_audio_tokenizer_shift_term_replaces_the_waveform_term(tmp_path):
    """--wave-weight 0 --shift-weight W: the loss is the spectral term, the quantizer's and W
    times how far the latents move under a delay; the waveform L1 is logged, not counted."""
    train_run("audio-tokenizer", tmp_path, "--steps", "3", "--batch", "2", "--data", "shapes-av:4",
              "--wave-weight", "0", "--shift-weight", "3", "--log-every", "1")  # fmt: skip
    for r in read_log(tmp_path, "audio_tokenizer"):
        assert r["shift"] > 0
        # 5-decimal logs
        assert r["loss"] == pytest.approx(r["stft"] + r["aux"] + 3 * r["shift"], abs=5e-5)
    model = AudioTokenizer(ModelConfig.from_name("tiny").audio)
    audio = torch.from_numpy(np.stack([av.generate_clip(s).audio[:4000] for s in range(2)]))
    with torch.no_grad():
        assert float(shift_distance(model, audio[:, 80:], audio[:, 80:])) == 0
        assert float(shift_distance(model, audio[:, 80:], audio[:, 40:-40])) > 0


def test_a_spectrum_encoder_run_starts_from_a_wave_tokenizers_decoder(tmp_path, tokenized):
    """--init-from across audio encoders: the decoder and codebooks come from the file, the
    new encoder starts fresh; with that encoder the waveform term is off by default (it cannot
    see the phase it would have to match)."""
    config = json.loads((tokenized / "config.json").read_text())
    config["audio_tokenizer"]["encoder_input"] = "spectrum"
    (tmp_path / "config.json").write_text(json.dumps(config))
    train_run("audio-tokenizer", tmp_path, "--steps", "2", "--batch", "2", "--data", "shapes-av:4",
              "--lr", "1e-9", "--log-every", "1", "--init-from", str(tokenized))  # fmt: skip
    source = load_file(str(tokenized / "audio_tokenizer.safetensors"))
    tuned = load_file(str(tmp_path / "audio_tokenizer.safetensors"))
    decoder = [k for k in tuned if k.startswith("decoder.")]
    assert decoder and all(torch.allclose(tuned[k], source[k], atol=1e-5) for k in decoder)
    encoder = [k for k in tuned if k.startswith("encoder.")]
    assert encoder and all(k not in source or source[k].shape != tuned[k].shape for k in encoder)
    for r in read_log(tmp_path, "audio_tokenizer"):
        assert r["loss"] == pytest.approx(r["stft"] + r["aux"], abs=2e-5)
    saved = ModelConfig.from_dict(json.loads((tmp_path / "config.json").read_text()))
    assert saved.audio.encoder_input == "spectrum"


def test_a_harmonic_tokenizer_learns_the_pitch_of_its_input(tmp_path):
    """harmonics > 0: each step also fits the harmonic source's pitch to the input's spectral
    peak (log2 distance, logged as `pitch`, counted in the loss), and that distance falls."""
    config = ModelConfig.from_name("tiny").to_dict()
    config["audio_tokenizer"].update(encoder_input="spectrum", harmonics=4)
    (tmp_path / "config.json").write_text(json.dumps(config))
    train_run("audio-tokenizer", tmp_path, "--steps", "40", "--batch", "4", "--data", "shapes-av:8",
              "--lr", "3e-3", "--log-every", "1")  # fmt: skip
    log = read_log(tmp_path, "audio_tokenizer")
    for r in log:
        assert r["loss"] == pytest.approx(r["stft"] + r["aux"] + r["pitch"], abs=5e-5)
    assert np.mean([r["pitch"] for r in log[-5:]]) < 0.5 * np.mean([r["pitch"] for r in log[:5]])
