"""Invariants of the SoundStream-style audio tokenizer, on the tiny preset (random init, CPU)."""

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from models.audio_tokenizer import (
    PRESETS,
    AudioTokenizer,
    AudioTokenizerConfig,
    flatten_codes,
    unflatten_codes,
)

SAMPLES = 34_000  # 2.125 s at 16 kHz, the paper's clip: 106 whole hops of 320 plus 80 samples


@pytest.fixture(scope="module")
def model() -> AudioTokenizer:
    torch.manual_seed(0)
    return AudioTokenizer(AudioTokenizerConfig.from_name("tiny")).eval()


def noise(batch: int, samples: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, samples, generator=g) * 2 - 1  # (B, N)


def test_paper_clip_gives_106_frames_of_4_levels(model):
    assert model.config.hop_length == 320 and model.config.frame_rate == 50
    assert model.num_frames(SAMPLES) == 106
    codes = model.encode(noise(2, SAMPLES))
    assert codes.shape == (2, 4, 106) and codes.dtype == torch.int64
    assert 0 <= codes.min() and codes.max() < 64
    assert model.decode(codes).shape == (2, 106 * 320)


def test_partial_last_hop_is_trimmed(model):
    audio = noise(1, SAMPLES)
    assert torch.equal(model.encode(audio), model.encode(audio[:, : 106 * 320]))


def test_flatten_is_level_major_and_unflatten_inverts_it(model):
    codes = model.encode(noise(2, SAMPLES))
    flat = flatten_codes(codes)
    assert flat.shape == (2, 4 * 106)
    for level in range(4):
        assert torch.equal(flat[:, level * 106 : (level + 1) * 106], codes[:, level])
    assert torch.equal(unflatten_codes(flat, 4), codes)
    assert torch.equal(
        AudioTokenizer.unflatten_codes(AudioTokenizer.flatten_codes(codes), 4), codes
    )


def test_round_trip_is_deterministic_and_matches_forward(model):
    audio = noise(1, 3200)
    codes = model.encode(audio)
    y = model.decode(codes)
    assert torch.equal(model.encode(audio), codes) and torch.equal(model.decode(codes), y)
    assert y.min() >= -1 and y.max() <= 1
    out = model(audio)
    assert torch.equal(out.codes, codes)
    torch.testing.assert_close(out.reconstruction.clamp(-1, 1), y)
    # codes -> audio -> codes runs and stays in range
    random_codes = torch.randint(0, 64, (2, 4, 10), generator=torch.Generator().manual_seed(0))
    again = model.encode(model.decode(random_codes))
    assert again.shape == random_codes.shape and 0 <= again.min() and again.max() < 64


def test_encode_in_train_mode_leaves_codebooks_alone():
    torch.manual_seed(0)
    model = AudioTokenizer(AudioTokenizerConfig.from_name("tiny")).train()
    before = {k: v.clone() for k, v in model.quantizer.state_dict().items()}
    model.encode(noise(1, 3200))
    after = model.quantizer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_training_steps_lower_reconstruction_loss():
    torch.manual_seed(0)
    model = AudioTokenizer(AudioTokenizerConfig.from_name("tiny")).train()
    t = torch.arange(3200) / 16000
    audio = (0.5 * torch.sin(2 * math.pi * 440 * t)).unsqueeze(0)  # (1, 3200): 0.2 s of A4
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        out = model(audio)
        loss = F.mse_loss(out.reconstruction, audio)
        losses.append(loss.item())
        opt.zero_grad()
        (loss + out.aux_loss).backward()
        opt.step()
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses


@pytest.mark.parametrize(
    "audio, message",
    [
        (torch.zeros(3200), r"\(B, N\)"),
        (torch.zeros(1, 1, 3200), r"\(B, N\)"),
        (torch.zeros(1, 3200, dtype=torch.long), "float"),
        (torch.zeros(1, 319), "N >= 320"),
    ],
)
def test_bad_audio_raises(model, audio, message):
    with pytest.raises(ValueError, match=message):
        model.encode(audio)


@pytest.mark.parametrize(
    "codes, message",
    [
        (torch.zeros(1, 3, 10, dtype=torch.long), "4 levels"),
        (torch.zeros(4, 10, dtype=torch.long), r"\(B, 4, F\)"),
        (torch.full((1, 4, 10), 64), r"\[0, 64\)"),
        (torch.full((1, 4, 10), -1), r"\[0, 64\)"),
        (torch.zeros(1, 4, 10), "integer"),
    ],
)
def test_bad_codes_raise(model, codes, message):
    with pytest.raises(ValueError, match=message):
        model.decode(codes)


def test_unflatten_rejects_ragged_length():
    with pytest.raises(ValueError, match="divisible"):
        unflatten_codes(torch.zeros(1, 10, dtype=torch.long), 4)


def test_safetensors_round_trip(model, tmp_path):
    path = tmp_path / "audio_tokenizer.safetensors"
    save_file(model.state_dict(), path)
    config = AudioTokenizerConfig.from_dict(model.config.to_dict())
    with torch.device("meta"):
        loaded = AudioTokenizer(config)
    loaded.load_state_dict(load_file(path), assign=True)
    loaded.eval()
    audio = noise(1, 6400)
    codes = model.encode(audio)
    assert torch.equal(loaded.encode(audio), codes)
    assert torch.equal(loaded.decode(codes), model.decode(codes))


def test_presets():
    assert set(PRESETS) == {"tiny", "demo", "paper"}
    for name in PRESETS:
        config = AudioTokenizerConfig.from_name(name)
        assert config.hop_length == 320 and config.num_quantizers == 4
    assert AudioTokenizerConfig.from_name("paper").codebook_size == 1024


def test_spectrum_encoder_codes_survive_a_delay_but_follow_the_sound():
    """encoder_input="spectrum": the codes describe the sound, not the wave's phase, so
    delaying a soundtrack by half a millisecond (8 samples) keeps them, even untrained, while
    another soundtrack gets other codes. Same frames, same decoder, same save/load as "wave"."""
    from models import shapes_av as av

    def soundtrack(seed):
        return torch.from_numpy(av.generate_clip(seed).audio)[None, : 40 * 320]

    audio = soundtrack(0)
    config = AudioTokenizerConfig(**PRESETS["tiny"], encoder_input="spectrum")
    torch.manual_seed(0)
    tok = AudioTokenizer(config).eval()
    codes = tok.encode(audio)
    assert codes.shape == (1, 4, 40) and tok.decode(codes).shape == (1, 40 * 320)
    same = (codes == tok.encode(torch.roll(audio, 8, dims=1)))[..., 2:-2].float().mean()
    assert same > 0.9
    other = next(
        s
        for s in range(1, 20)
        if av.generate_clip(s).spec.main.shape != av.generate_clip(0).spec.main.shape
    )
    assert (codes == tok.encode(soundtrack(other)))[..., 2:-2].float().mean() < 0.5
    assert AudioTokenizerConfig.from_dict(config.to_dict()).encoder_input == "spectrum"
    with torch.device("meta"):
        loaded = AudioTokenizer(config)
    loaded.load_state_dict(tok.state_dict(), assign=True)
    assert torch.equal(loaded.eval().encode(audio), codes)


def test_unknown_encoder_input_is_refused():
    with pytest.raises(ValueError, match="encoder_input must be one of"):
        AudioTokenizerConfig(encoder_input="mel")


def test_spectral_peak_follows_a_shapes_av_tone():
    """The pitch the harmonic source is taught: within 2 % of the soundtrack's own pitch,
    which glides with the object's height."""
    import numpy as np

    from models import shapes_av as av
    from models.audio_tokenizer import spectral_peak_hz

    clip = next(c for c in map(av.generate_clip, range(40)) if c.spec.main.motion in ("up", "down"))
    hz, loud = spectral_peak_hz(torch.from_numpy(clip.audio)[None], 320, 16000)
    frames = np.arange(10, 100)  # video frame of each audio frame (50 vs 8 per second)
    _, cy = clip.spec.main.centre(frames * 8 / 50)
    assert loud[0, frames].all()
    assert np.abs(hz[0, frames].numpy() / av.pitch_hz(cy) - 1).max() < 0.02
    silent, loud = spectral_peak_hz(torch.zeros(1, 6400), 320, 16000)
    assert not loud.any()


def test_harmonic_source_plays_a_steady_tone_between_the_hop_multiples():
    """A conv decoder repeats itself every hop (320 samples: multiples of 50 Hz only) for
    steady codes; the harmonic source's running phase plays 160 Hz from steady latents."""
    from models.audio_tokenizer import F0_RANGE_HZ, HarmonicSource, spectral_peak_hz

    config = AudioTokenizerConfig(**PRESETS["tiny"], harmonics=4)
    source = HarmonicSource(config)
    lo, hi = F0_RANGE_HZ
    with torch.no_grad():
        last = source.head[-1]
        last.weight.zero_()
        last.bias.zero_()
        last.bias[0] = torch.logit(torch.tensor(math.log(160 / lo) / math.log(hi / lo)))
        last.bias[1] = 5.0  # the fundamental only
        last.bias[2:] = -20.0
        tone, pitch = source(torch.randn(1, config.latent_dim, 1).expand(1, -1, 40))
    assert tone.shape == (1, 40 * 320) and torch.allclose(pitch, torch.full((1, 40), 160.0))
    hz, loud = spectral_peak_hz(tone, 320, 16000)
    assert loud[0, 5:-5].all() and (hz[0, 5:-5] - 160).abs().max() < 2
    assert not torch.allclose(tone[0, 3200:3520], tone[0, 3520:3840], atol=1e-3)  # not hop-periodic
    with torch.no_grad():  # teacher forcing: a given pitch is played, the prediction reported
        forced, predicted = source(
            torch.randn(1, config.latent_dim, 1).expand(1, -1, 40), torch.full((1, 40), 300.0)
        )
    hz, _ = spectral_peak_hz(forced, 320, 16000)
    assert (hz[0, 5:-5] - 300).abs().max() < 3 and torch.allclose(predicted, pitch)
