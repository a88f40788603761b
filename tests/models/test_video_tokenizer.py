"""Invariants of the causal video tokenizer, on the tiny preset (random init, CPU)."""

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from models.video_tokenizer import PRESETS, VideoTokenizer, VideoTokenizerConfig


@pytest.fixture(scope="module")
def model() -> VideoTokenizer:
    torch.manual_seed(0)
    return VideoTokenizer(VideoTokenizerConfig.from_name("tiny")).eval()


def clip(frames: int, height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, frames, height, width, generator=g) * 2 - 1  # (B, 3, T, H, W)


def test_image_tokens_equal_first_latent_frame_of_video(model):
    video = clip(17)
    image = video[:, :, :1]
    assert torch.equal(model.encode(image)[:, 0], model.encode(video)[:, 0])
    torch.testing.assert_close(model.encoder(image)[:, :, 0], model.encoder(video)[:, :, 0])


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_latent_frame_k_ignores_frames_after_4k(model, k):
    video = clip(17)
    changed = video.clone()
    changed[:, :, 4 * k + 1 :] = clip(16 - 4 * k, seed=1)
    z, z_changed = model.encoder(video), model.encoder(changed)  # (B, bits, 5, h, w)
    torch.testing.assert_close(z[:, :, : k + 1], z_changed[:, :, : k + 1])
    assert not torch.allclose(z[:, :, k + 1], z_changed[:, :, k + 1])  # the test can fail
    assert torch.equal(model.encode(video)[:, : k + 1], model.encode(changed)[:, : k + 1])


def test_decoder_is_causal(model):
    tokens = model.encode(clip(17))
    full = model.decode(tokens)  # (B, 3, 17, H, W)
    torch.testing.assert_close(model.decode(tokens[:, :1]), full[:, :, :1])  # an image
    torch.testing.assert_close(model.decode(tokens[:, :2]), full[:, :, :5])


@pytest.mark.parametrize(
    "frames, height, width, latent",
    [(17, 128, 128, (5, 16, 16)), (17, 224, 128, (5, 28, 16)), (1, 128, 128, (1, 16, 16))],
)
def test_paper_shapes(model, frames, height, width, latent):
    assert model.config.latent_shape(frames, height, width) == latent
    tokens = model.encode(clip(frames, height, width))
    assert tokens.shape == (1, *latent) and tokens.dtype == torch.int64
    assert 0 <= tokens.min() and tokens.max() < 2**8
    assert model.decode(tokens).shape == (1, 3, frames, height, width)


def test_round_trip_is_deterministic_and_matches_forward(model):
    x = clip(5)
    tokens = model.encode(x)
    y = model.decode(tokens)
    assert torch.equal(model.encode(x), tokens) and torch.equal(model.decode(tokens), y)
    assert y.min() >= -1 and y.max() <= 1
    out = model(x)  # eval mode: LFQ returns the hard codes, as decode rebuilds them
    assert torch.equal(out.tokens, tokens) and out.aux_loss.item() == 0
    torch.testing.assert_close(out.reconstruction.clamp(-1, 1), y)
    # tokens -> frames -> tokens runs and stays in range
    random_tokens = torch.randint(0, 2**8, (2, 2, 4, 4), generator=torch.Generator().manual_seed(0))
    again = model.encode(model.decode(random_tokens))
    assert again.shape == random_tokens.shape and 0 <= again.min() and again.max() < 2**8


def test_training_steps_lower_reconstruction_loss():
    torch.manual_seed(0)
    model = VideoTokenizer(VideoTokenizerConfig.from_name("tiny")).train()
    x = clip(5, 16, 16)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        out = model(x)
        loss = F.mse_loss(out.reconstruction, x)
        losses.append(loss.item())
        opt.zero_grad()
        (loss + out.aux_loss).backward()
        opt.step()
    assert np.mean(losses[-3:]) < 0.7 * losses[0], losses


@pytest.mark.parametrize(
    "shape, message",
    [
        ((3, 17, 32, 32), "5-D"),
        ((1, 1, 17, 32, 32), "3 channels"),
        ((1, 3, 16, 32, 32), "4k+1"),
        ((1, 3, 17, 36, 32), "multiple of 8"),
    ],
)
def test_bad_frames_raise_with_expected_shape(model, shape, message):
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        model.encode(torch.zeros(shape))
    assert "(B, 3, T, H, W)" in str(err.value)


def test_bad_tokens_raise(model):
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        model.decode(torch.full((1, 1, 2, 2), 256))
    with pytest.raises(ValueError, match=r"\(B, t, h, w\)"):
        model.decode(torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        model.decode(torch.zeros(1, 1, 2, 2))


def test_safetensors_round_trip(model, tmp_path):
    path = tmp_path / "video_tokenizer.safetensors"
    save_file(model.state_dict(), path)
    config = VideoTokenizerConfig.from_dict(model.config.to_dict())
    with torch.device("meta"):
        loaded = VideoTokenizer(config)
    loaded.load_state_dict(load_file(path), assign=True)
    loaded.eval()
    x = clip(5)
    tokens = model.encode(x)
    assert torch.equal(loaded.encode(x), tokens)
    assert torch.equal(loaded.decode(tokens), model.decode(tokens))


def test_frames_uint8_round_trip():
    frames = np.random.default_rng(0).integers(
        0, 256, (5, 16, 24, 3), dtype=np.uint8
    )  # (T, H, W, 3)
    x = VideoTokenizer.frames_to_tensor(frames)
    assert x.shape == (1, 3, 5, 16, 24) and x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(VideoTokenizer.tensor_to_frames(x)[0], frames)


def test_presets():
    assert set(PRESETS) == {"tiny", "demo", "paper"}
    for name in PRESETS:
        config = VideoTokenizerConfig.from_name(name)
        assert config.spatial_factor == 8 and config.temporal_factor == 4
        assert config.latent_shape(17, 128, 128) == (5, 16, 16)
    assert VideoTokenizerConfig.from_name("paper").codebook_size == 2**18


def test_frame_norm_lets_a_flat_colour_through():
    """Per-channel means of a plain frame survive the norm (instance norm would zero them)."""
    from models.video_tokenizer import FrameGroupNorm

    norm = FrameGroupNorm(16)
    flat = torch.arange(16, dtype=torch.float32).view(1, 16, 1, 1, 1).expand(1, 16, 2, 4, 4)
    out = norm(flat.contiguous())
    assert out.abs().max() > 0.5
    assert torch.equal(out[:, :, 0], out[:, :, 1])  # and still frame by frame


@pytest.mark.parametrize("frame, latent_frame", [(0, 0), (1, 1), (4, 1), (5, 2), (16, 4)])
def test_token_mask_marks_the_tokens_whose_patch_holds_the_pixel(model, frame, latent_frame):
    """Latent frame 0 covers frame 0 alone, latent frame k frames 4k-3..4k; each token 8x8 px."""
    pixels = torch.zeros(2, 1, 17, 64, 64, dtype=torch.bool)
    pixels[1, 0, frame, 10, 63] = True  # row 10 -> token row 1; column 63 -> token column 7
    mask = model.token_mask(pixels)
    assert mask.shape == (2, 5 * 8 * 8)
    assert not mask[0].any()
    assert mask[1].nonzero().flatten().tolist() == [latent_frame * 64 + 1 * 8 + 7]


def test_an_all_true_token_mask_changes_nothing():
    """Masked entropy over every token is the plain loss: the mask only narrows what it sees."""
    torch.manual_seed(0)
    tok = VideoTokenizer(VideoTokenizerConfig.from_name("tiny")).train()
    x = clip(5)
    everything = torch.ones(1, tok.config.latent_shape(5, 32, 32)[0] * 16, dtype=torch.bool)
    plain, masked = tok(x), tok(x, everything)
    assert torch.allclose(plain.aux_loss, masked.aux_loss)
    assert torch.equal(plain.reconstruction, masked.reconstruction)


def test_a_wider_decoder_reads_the_same_tokens():
    """decoder_channels / decoder_channel_mult widen the decoder only: the encoder, and so the
    tokens, are the default's; configs saved before these fields existed load unchanged."""
    base = dict(PRESETS["tiny"])
    narrow = VideoTokenizerConfig(**base)
    wide = VideoTokenizerConfig(**base, decoder_channels=8, decoder_channel_mult=[2, 3, 4])
    assert VideoTokenizerConfig.from_dict(wide.to_dict()) == wide
    assert (
        VideoTokenizerConfig.from_dict(
            {k: v for k, v in narrow.to_dict().items() if not k.startswith("decoder_")}
        )
        == narrow
    )
    torch.manual_seed(0)
    a = VideoTokenizer(narrow).eval()
    b = VideoTokenizer(wide).eval()
    b.encoder.load_state_dict(a.encoder.state_dict())
    x = clip(9)
    assert torch.equal(a.encode(x), b.encode(x))
    widths = [m.out_channels for m in b.decoder.modules() if isinstance(m, torch.nn.Conv3d)]
    assert {8 * 2, 8 * 3, 8 * 4} <= set(widths)
    assert b.decode(b.encode(x)).shape == x.shape
    with (
        torch.no_grad()
    ):  # codes(): the grid the decoder reads, as decode() rebuilds it from tokens
        torch.testing.assert_close(b.decoder(b.codes(x)).clamp(-1, 1), b.decode(b.encode(x)))
    with pytest.raises(ValueError, match="one entry per stage"):
        VideoTokenizerConfig(**base, decoder_channel_mult=[2, 2])
    with pytest.raises(ValueError, match="decoder_channels must be >= 1"):
        VideoTokenizerConfig(**base, decoder_channels=0)


def _conv_kernels(fn) -> dict[str, int]:
    """How many times each CPU convolution kernel ran inside `fn()`."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    names = ("aten::mkldnn_convolution", "aten::slow_conv3d_forward")
    return {n: sum(e.name == n for e in prof.events()) for n in names}


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN in this build")
@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")
def test_every_conv_runs_on_onednn_at_batch_one_and_can_be_turned_off(model):
    tokens = model.encode(clip(5))
    convs = sum(isinstance(m, torch.nn.Conv3d) for m in model.decoder.modules())
    kernels = _conv_kernels(lambda: model.decode(tokens))
    assert kernels == {"aten::mkldnn_convolution": convs, "aten::slow_conv3d_forward": 0}
    with torch.backends.mkldnn.flags(enabled=False):
        off = _conv_kernels(lambda: model.decode(tokens))
    assert off["aten::mkldnn_convolution"] == 0 and off["aten::slow_conv3d_forward"] == convs


@pytest.mark.parametrize("threads", [1, 2])
def test_a_row_encodes_and_decodes_alone_exactly_as_in_a_batch(model, threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        video = torch.cat([clip(9, seed=s) for s in range(4)])
        z_batch = model.encoder(video)
        tokens = model.encode(video)
        frames = model.decode(tokens)
        for k in range(4):
            assert torch.equal(model.encoder(video[k : k + 1])[0], z_batch[k])
            assert torch.equal(model.encode(video[k : k + 1])[0], tokens[k])
            assert torch.equal(model.decode(tokens[k : k + 1])[0], frames[k])
        assert torch.equal(model.decode(tokens[1:3]), frames[1:3])
    finally:
        torch.set_num_threads(before)


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")
def test_onednn_convs_match_pytorchs_own_path_and_train(model):
    conv = model.decoder.conv_out
    x = torch.randn(1, conv.in_channels, 3, 8, 8, requires_grad=True)
    out = conv(x)
    with torch.backends.mkldnn.flags(enabled=False):
        reference = conv(x)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    out.square().sum().backward()
    assert x.grad is not None and conv.weight.grad is not None
    conv.weight.grad = conv.bias.grad = None
