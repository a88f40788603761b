"""Batched detokenization: every row of a batch in one tokenizer call, each row's pixels exactly
those of the same row decoded alone; dropped rows are not decoded; a preview of a row's first
latent frames is the start of its full decode."""

import numpy as np
import pytest
import torch

from models.pipeline import GenerationCancelled, _Clock
from models.video_tokenizer import DecoderState


def _codes(pipeline, rows: int, t: int, seed: int = 0) -> torch.Tensor:
    """Random flat visual codes (rows, t*h*w): every code decodes, random ones vary most."""
    h, w = pipeline.shapes.latent_hw
    size = pipeline.video_tokenizer.config.codebook_size
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, size, (rows, t * h * w), generator=generator)


def _assert_same_pixels(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype == np.uint8
    np.testing.assert_array_equal(a, b)


@pytest.fixture
def decoder_batches(tiny):
    """The batch size of every call into the video decoder while the test runs."""
    seen: list[int] = []
    hook = tiny.video_tokenizer.decoder.register_forward_hook(
        lambda module, args, out: seen.append(args[0].shape[0])
    )
    yield seen
    hook.remove()


def test_a_batch_decodes_to_each_row_alone(tiny, decoder_batches):
    t = tiny.shapes.t_clip
    codes = _codes(tiny, 4, t)
    batched = tiny.decode_video_tokens(codes, t)
    # on a CPU row by row (faster there with oneDNN at batch 1); the tokenizer's own tests
    # check that a batch of rows decodes exactly as each row alone, for accelerators
    assert decoder_batches == [1, 1, 1, 1]
    h, w = tiny.shapes.latent_hw
    assert batched.shape == (4, 4 * (t - 1) + 1, 8 * h, 8 * w, 3)
    for k in range(4):
        alone = tiny.decode_video_tokens(codes[k : k + 1], t)
        _assert_same_pixels(batched[k], alone[0])
    # an image (one latent frame) too
    images = _codes(tiny, 3, 1, seed=1)
    together = tiny.decode_video_tokens(images, 1)
    for k in range(3):
        _assert_same_pixels(together[k], tiny.decode_video_tokens(images[k : k + 1], 1)[0])


def test_a_dropped_row_is_not_decoded_and_stays_black(tiny, decoder_batches):
    t = tiny.shapes.t_clip
    codes = _codes(tiny, 3, t, seed=2)
    clock = _Clock({})
    frames = tiny._decode_video(codes, t, clock, dropped=lambda: {1})
    assert decoder_batches == [1, 1]  # rows 0 and 2 only
    assert not frames[1].any()
    live = tiny.decode_video_tokens(codes[[0, 2]], t)
    np.testing.assert_array_equal(frames[[0, 2]], live)
    _assert_same_pixels(frames[2], tiny.decode_video_tokens(codes[2:3], t)[0])
    assert clock.timings["detokenize"] > 0
    decoder_batches.clear()
    with pytest.raises(GenerationCancelled):
        tiny._decode_video(codes, t, clock, dropped=lambda: {0, 1, 2})
    assert decoder_batches == []


def test_a_prefix_decodes_to_the_first_frames_of_the_full_decode(tiny):
    t = tiny.shapes.t_clip
    row = _codes(tiny, 1, t, seed=3)
    full = tiny.decode_video_tokens(row, t)[0]
    for k in range(1, t + 1):
        preview = tiny.decode_video_prefix(row, k)
        assert preview.shape == (4 * (k - 1) + 1, *full.shape[1:])
        _assert_same_pixels(preview, full[: len(preview)])
    np.testing.assert_array_equal(
        tiny.decode_video_prefix(row[0], 2), tiny.decode_video_prefix(row, 2)
    )
    for bad in (0, t + 1):
        with pytest.raises(ValueError, match="latent_frames"):
            tiny.decode_video_prefix(row, bad)
    with pytest.raises(ValueError, match="one row"):
        tiny.decode_video_prefix(_codes(tiny, 2, t), 1)


@pytest.mark.parametrize("split", [[1, 1, 1, 1, 1], [1, 4], [2, 3], [3, 2], [5]])
def test_a_carried_decode_in_any_split_gives_the_whole_clip(tiny, split):
    t = tiny.shapes.t_clip
    assert sum(split) == t
    row = _codes(tiny, 1, t, seed=5)
    full = tiny.decode_video_tokens(row, t)[0]
    state, parts, done = DecoderState(), [], 0
    for n in split:
        done += n
        part = tiny.decode_video_carried(row[0], done, state)
        # the clip's first latent frame is one frame, every later one four
        assert len(part) == 4 * n - (3 if len(parts) == 0 else 0)
        assert state.latent_frames == done
        parts.append(part)
    frames = np.concatenate(parts)
    assert frames.shape == full.shape
    assert np.abs(frames.astype(int) - full.astype(int)).max() <= 1
    with pytest.raises(ValueError, match="latent_frames"):  # nothing left to decode
        tiny.decode_video_carried(row[0], t, state)


def test_a_carried_decode_wants_frames_past_those_decoded(tiny):
    t = tiny.shapes.t_clip
    row = _codes(tiny, 1, t, seed=6)
    state = DecoderState()
    first = tiny.decode_video_carried(row, 2, state)
    for bad in (2, 1, t + 1):
        with pytest.raises(ValueError, match=r"latent_frames must be 3\.\.5"):
            tiny.decode_video_carried(row, bad, state)
    # a call that fails inside the decoder leaves the state as it was: the clip goes on whole
    real = tiny.video_tokenizer.decoder.norm_out.forward

    def broken(x):
        raise RuntimeError("decoder failed")

    tiny.video_tokenizer.decoder.norm_out.forward = broken
    try:
        with pytest.raises(RuntimeError, match="decoder failed"):
            tiny.decode_video_carried(row, t, state)
    finally:
        tiny.video_tokenizer.decoder.norm_out.forward = real
    assert state.latent_frames == 2
    rest = tiny.decode_video_carried(row, t, state)
    full = tiny.decode_video_tokens(row, t)[0]
    frames = np.concatenate([first, rest])
    assert np.abs(frames.astype(int) - full.astype(int)).max() <= 1


def test_decode_video_tokens_wants_whole_latent_frames(tiny):
    t = tiny.shapes.t_clip
    with pytest.raises(ValueError, match=r"\(B, t\*h\*w\)"):
        tiny.decode_video_tokens(_codes(tiny, 2, t)[:, :-1], t)
    with pytest.raises(ValueError, match=r"\(B, t\*h\*w\)"):
        tiny.decode_video_tokens(_codes(tiny, 1, t)[0], t)
