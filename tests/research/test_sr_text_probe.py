import dataclasses
from types import SimpleNamespace

import numpy as np

from models import shapes_av as av
from research import sr_text_probe as probe

N = 6


class _Drawer:
    """An SR stand-in that renders at twice the size the clip its caption describes, or (with
    `shape`) that clip with every object drawn as `shape`, whatever the caption says."""

    card = SimpleNamespace(height=64, width=64)

    def __init__(self, shape: str | None = None):
        self.shape = shape
        self.specs = {}
        for i, spec in enumerate(av.heldout_specs(N, seed=12345)):
            for s in (spec, probe.swapped_spec(spec, 1 + i % 2)):
                self.specs[av.make_clip(s, phrasing="heldout").caption] = s

    def upscale(self, frames: np.ndarray, caption: str, seed: int, clock) -> np.ndarray:
        spec = self.specs[caption]
        if self.shape:
            spec = dataclasses.replace(
                spec, objects=tuple(dataclasses.replace(o, shape=self.shape) for o in spec.objects)
            )
        return av.render_frames(spec, 128)


def test_a_stage_that_draws_the_text_follows_the_swapped_caption():
    result = probe.probe(_Drawer(), N)
    assert result["input"] == "blurred"
    assert result["own_caption"] == result["swapped_follows_text"] == 1.0
    assert result["swapped_follows_pixels"] == 0.0


def test_a_stage_that_rounds_every_outline_scores_the_share_of_circles():
    specs = av.heldout_specs(N, seed=12345)
    result = probe.probe(_Drawer(shape="circle"), N, blur=False)
    assert result["input"] == "sharp"
    circles = np.mean([s.main.shape == "circle" for s in specs])
    swapped = np.mean(
        [probe.swapped_spec(s, 1 + i % 2).main.shape == "circle" for i, s in enumerate(specs)]
    )
    assert result["own_caption"] == round(float(circles), 3) < 1.0
    assert result["swapped_follows_text"] == round(float(swapped), 3) < 1.0
