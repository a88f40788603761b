"""Continuous batching at the model level (models/engine.py): rows that join a running batch
at different steps, leave it when complete or dropped, and still get the tokens (so the
pixels) they get alone; previews are the first frames of the finished video."""

from __future__ import annotations

import numpy as np
import pytest

from models.engine import ContinuousBatch, streams
from models.pipeline import Pipeline
from models.spec import GenerationInputs, Task, TaskSpec


def _run(
    batch: ContinuousBatch,
    specs: dict[int, TaskSpec],
    join_at: dict[int, int],
    inputs: dict[int, GenerationInputs] | None = None,
    drop_at: dict[int, int] | None = None,
    preview: bool = False,
) -> tuple[dict[int, np.ndarray], list[tuple[int, int | None]], dict[int, list[np.ndarray]]]:
    """Step the batch, admitting spec k at step join_at[k] and dropping it at drop_at[k];
    returns each finished row's frames, the events in order, and each row's previews."""
    waiting, frames, events = dict(specs), {}, []
    previews: dict[int, list[np.ndarray]] = {}
    step = 0
    while waiting or len(batch):
        for k in [k for k in waiting if join_at[k] <= step]:
            if not batch.free_rows:
                break  # it waits for a row to leave
            row_inputs = (inputs or {}).get(k, GenerationInputs())
            batch.admit(k, waiting.pop(k), row_inputs, preview=preview)
        for k in [k for k, at in (drop_at or {}).items() if at == step]:
            batch.drop(k)
        for key, index in batch.step():
            events.append((key, index))
            if index is None:
                frames[key] = batch.finish(key).frames
            else:
                previews.setdefault(key, []).append(batch.preview(key, index))
        step += 1
    return frames, events, previews


def _specs(task: Task, n: int, **fields: object) -> dict[int, TaskSpec]:
    settings = [
        {"temperature": 1.0},
        {"top_k": 7},
        {"top_p": 0.8, "temperature": 0.7},
        {"temperature": 0.0},  # greedy
    ]
    return {
        k: TaskSpec(
            task=task, prompt=f"a shape number {k}", seed=40 + k, **settings[k % 4], **fields
        )  # type: ignore[arg-type]
        for k in range(n)
    }


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_a_row_that_joins_a_running_batch_gets_its_solo_pixels(
    tiny: Pipeline, guidance: float
) -> None:
    specs = _specs(Task.text_to_video, 4, guidance_scale=guidance)
    alone = {k: tiny.generate(spec).frames for k, spec in specs.items()}
    batch = tiny.continuous(specs[0], capacity=3)
    assert batch is not None
    # 0 starts alone, 1 and 2 join mid-way, 3 waits for a free row (capacity 3): it joins when
    # 0 leaves
    frames, events, _ = _run(batch, specs, {0: 0, 1: 5, 2: 5, 3: 6})
    assert [k for k, index in events if index is None] == [0, 1, 2, 3]
    for k in specs:
        np.testing.assert_array_equal(frames[k], alone[k])


def test_a_dropped_row_leaves_and_the_others_are_unchanged(tiny: Pipeline) -> None:
    specs = _specs(Task.text_to_image, 3)
    alone = {k: tiny.generate(spec).frames for k, spec in specs.items()}
    batch = tiny.continuous(specs[0], capacity=4)
    assert batch is not None
    frames, events, _ = _run(batch, specs, {0: 0, 1: 2, 2: 4}, drop_at={1: 6})
    assert sorted(frames) == [0, 2] and 1 not in {k for k, _ in events}
    for k in (0, 2):
        np.testing.assert_array_equal(frames[k], alone[k])


def test_image_to_video_and_inpaint_stream_with_their_inputs(tiny: Pipeline) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    video = rng.integers(0, 256, (17, 32, 32, 3), dtype=np.uint8)
    cases = [
        (Task.image_to_video, GenerationInputs(image=image)),
        (Task.inpaint, GenerationInputs(video=video, video_fps=8.0)),
    ]
    for task, row_inputs in cases:
        specs = _specs(task, 2)
        inputs = dict.fromkeys(specs, row_inputs)
        alone = {k: tiny.generate(spec, row_inputs).frames for k, spec in specs.items()}
        batch = tiny.continuous(specs[0], capacity=2)
        assert batch is not None
        frames, _, _ = _run(batch, specs, {0: 0, 1: 9}, inputs=inputs)
        for k in specs:
            np.testing.assert_array_equal(frames[k], alone[k])


def test_previews_come_in_order_before_the_end_and_show_the_first_frames(
    tiny: Pipeline,
) -> None:
    specs = _specs(Task.text_to_video, 2)
    batch = tiny.continuous(specs[0], capacity=2)
    assert batch is not None
    frames, events, previews = _run(batch, specs, {0: 0, 1: 3}, preview=True)
    t = tiny.shapes.t_clip
    for k in specs:
        mine = [index for key, index in events if key == k]
        # one preview per latent frame but the last (that one is the finished video), then the end
        assert mine == [*range(t - 1), None]
        for index, preview in enumerate(previews[k]):
            n = 4 * index + 1  # latent frame i covers pixel frames up to 4i
            assert preview.shape == (n, *frames[k].shape[1:])
            diff = np.abs(preview.astype(int) - frames[k][:n].astype(int)).max()
            assert diff <= 1  # within one level per channel of the finished video


def test_a_video_made_with_previews_is_the_video_made_without(tiny: Pipeline) -> None:
    # its previews decoded its first latent frames; the finish goes on from their decoder state
    specs = _specs(Task.text_to_video, 2)
    made: dict[bool, dict[int, np.ndarray]] = {}
    for preview in (False, True):
        batch = tiny.continuous(specs[0], capacity=2)
        assert batch is not None
        made[preview], _, previews = _run(batch, specs, {0: 0, 1: 3}, preview=preview)
        assert bool(previews) is preview
    for k in specs:
        assert made[True][k].shape == made[False][k].shape
        assert np.abs(made[True][k].astype(int) - made[False][k].astype(int)).max() <= 1
        # the last preview's frames are the finished video's, not a second decode of them
        assert np.array_equal(previews[k][-1], made[True][k][: len(previews[k][-1])])


def test_which_requests_stream(tiny: Pipeline) -> None:
    card = tiny.card
    assert streams(TaskSpec(task=Task.text_to_video, prompt="x"), card)
    assert not streams(TaskSpec(task=Task.text_to_video, prompt="x", with_audio=True), card)
    assert not streams(TaskSpec(task=Task.text_to_video, prompt="x", seconds=8), card)
    assert not streams(TaskSpec(task=Task.continuation), card)
    assert tiny.continuous(TaskSpec(task=Task.continuation), capacity=2) is None
