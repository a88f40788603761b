import numpy as np
import pytest

from models.pipeline import load_pipeline


@pytest.fixture(scope="session")
def tiny():
    """The tiny preset: random weights from a fixed seed, shared by the model tests."""
    return load_pipeline("tiny")


@pytest.fixture
def clip():
    """A 20-frame 48x40 clip with a bright square moving right (any size: the pipeline resizes)."""
    frames = np.full((20, 48, 40, 3), 30, dtype=np.uint8)
    for t in range(20):
        frames[t, 16:28, t : t + 12] = (220, 40, 40)
    return frames


@pytest.fixture
def tone():
    """2.5 s of a 440 Hz tone at 16 kHz."""
    t = np.arange(40_000) / 16_000
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
