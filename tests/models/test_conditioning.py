import numpy as np
import pytest

from models.conditioning import depth_like, latent_box_mask, resample_audio, stylize_control


def _moving_square(dx: int, dy: int) -> np.ndarray:
    frames = np.full((6, 64, 64, 3), 20, dtype=np.uint8)
    for t in range(6):
        y, x = 24 + dy * t, 24 + dx * t
        frames[t, y : y + 14, x : x + 14] = (200, 200, 60)
    return frames


@pytest.mark.parametrize("dx, dy", [(2, 0), (-2, 0), (0, 2), (0, -2)])
def test_control_video_flow_channels_follow_the_motion(dx, dy):
    control = stylize_control(_moving_square(dx, dy)).astype(float) - 127.5
    assert np.abs(control[0, ..., :2]).max() <= 1  # the first frame has no flow
    region = control[3, 24:40, 24:40]
    if dx:
        assert np.sign(region[..., 0].mean()) == np.sign(dx)
    if dy:
        assert np.sign(region[..., 1].mean()) == np.sign(dy)


def test_depth_like_map_marks_the_object_not_the_colours():
    frames = _moving_square(0, 0)
    recoloured = frames.copy()
    recoloured[frames[..., 0] == 200] = (40, 90, 250)
    a, b = depth_like(frames[0]), depth_like(recoloured[0])
    assert a[30, 30] > 0.9 and a[2, 2] < 0.05  # object near, background far
    assert b[30, 30] > 0.9 and b[2, 2] < 0.05  # same layers whatever the colour


def test_box_covers_every_latent_cell_it_touches():
    mask = latent_box_mask((10, 0, 20, 8), src_hw=(64, 64), latent_hw=(8, 8))
    assert mask[0, 1] and mask[0, 2] and not mask[0, 3] and not mask[1].any()
    default = latent_box_mask(None, src_hw=(64, 64), latent_hw=(8, 8))
    assert default.sum() == 16 and default[2:6, 2:6].all()


def test_audio_is_resampled_to_the_model_rate():
    t = np.arange(44_100) / 44_100
    out = resample_audio(np.sin(2 * np.pi * 100 * t).astype(np.float32), 44_100, 16_000)
    assert out.shape == (16_000,) and out.dtype == np.float32
    crossings = np.sum(np.diff(np.signbit(out)) != 0)
    assert 195 <= crossings <= 205  # still 100 Hz
