import numpy as np
import pytest
import torch

from models.generate import GenerationCancelled
from models.pipeline import GenerationInputs, describe, load_pipeline
from models.spec import Task, TaskSpec, TaskSpecError

SR = 16_000


def _inputs(task: Task, clip, tone) -> tuple[dict, GenerationInputs]:
    """Spec fields and decoded inputs that `task` needs."""
    video = dict(video=clip, video_fps=8.0)
    audio = dict(audio=tone, audio_sample_rate=SR)
    table = {
        Task.unconditional: ({}, {}),
        Task.text_to_video: ({"prompt": "a red circle moves left"}, {}),
        Task.text_to_image: ({"prompt": "a red circle"}, {}),
        Task.image_to_video: ({"prompt": "it moves up"}, {"image": clip[0]}),
        Task.continuation: ({}, video),
        Task.inpaint: ({"mask_box": (8, 8, 24, 24)}, video),
        Task.outpaint: ({}, video),
        Task.stylize: ({"prompt": "a blue square"}, video),
        Task.audio_to_video: ({}, audio),
        Task.video_to_audio: ({}, video),
        Task.av_continuation: ({}, {**video, **audio}),
    }
    fields, inputs = table[task]
    return fields, GenerationInputs(**inputs)


# (frames, seconds of audio or None) each task returns for the 20-frame input clip at 8 fps
EXPECTED = {
    Task.unconditional: (17, None),
    Task.text_to_video: (17, None),
    Task.text_to_image: (1, None),
    Task.image_to_video: (17, None),
    Task.continuation: (28, None),  # the 20 input frames + one step of 8
    Task.inpaint: (17, None),
    Task.outpaint: (17, None),
    Task.stylize: (17, None),
    Task.audio_to_video: (17, 17 / 8),
    Task.video_to_audio: (17, 17 / 8),
    Task.av_continuation: (28, 28 / 8),
}


@pytest.mark.parametrize("task", list(Task), ids=lambda t: t.value)
def test_every_task_generates_output_of_the_right_shape(tiny, clip, tone, task):
    fields, inputs = _inputs(task, clip, tone)
    result = tiny.generate(TaskSpec(task=task, seed=7, **fields), inputs)
    frames, audio_seconds = EXPECTED[task]
    assert result.frames.shape == (frames, 32, 32, 3) and result.frames.dtype == np.uint8
    assert result.fps == 8.0
    if audio_seconds is None:
        assert result.audio is None
    else:
        assert result.sample_rate == SR and result.audio.dtype == np.float32
        assert result.audio.shape == (round(audio_seconds * SR),)
        assert np.abs(result.audio).max() <= 1.0
    assert result.tokens["generated"] > 0 and result.tokens["prefix"] > 0
    assert result.timings["sampling"] > 0 and result.time_to_first_token is not None
    assert result.seed == 7


def test_same_seed_same_output_other_seed_other_output(tiny):
    spec = dict(task=Task.text_to_video, prompt="a green triangle moves right")
    a = tiny.generate(TaskSpec(seed=1, **spec)).frames
    b = tiny.generate(TaskSpec(seed=1, **spec)).frames
    c = tiny.generate(TaskSpec(seed=2, **spec)).frames
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_unset_seed_is_drawn_and_reported_so_the_output_can_be_replayed(tiny):
    first = tiny.generate(TaskSpec(task=Task.text_to_image, prompt="a dot"))
    again = tiny.generate(TaskSpec(task=Task.text_to_image, prompt="a dot", seed=first.seed))
    np.testing.assert_array_equal(first.frames, again.frames)


def assert_same_pixels(batched: np.ndarray, alone: np.ndarray) -> None:
    """A batched row's pixels are exactly its solo pixels (the same tokens; the video tokenizer's
    convolutions compute each row on its own at every batch size)."""
    np.testing.assert_array_equal(batched, alone)


def test_batch_gives_each_row_what_it_gives_alone(tiny):
    specs = [
        TaskSpec(task=Task.text_to_video, prompt="a red circle", seed=3),
        TaskSpec(task=Task.text_to_video, prompt="a blue square moves up", seed=4, top_k=5),
        TaskSpec(task=Task.text_to_image, prompt="a dot", seed=5),
    ]
    batched = tiny.generate(specs)
    for spec, result in zip(specs, batched):
        assert_same_pixels(result.frames, tiny.generate(spec).frames)


def test_guidance_changes_the_output_and_scale_one_is_plain_sampling(tiny):
    spec = dict(task=Task.text_to_video, prompt="a yellow star moves down", seed=11)
    plain = tiny.generate(TaskSpec(**spec)).frames  # guidance_scale defaults to 1
    guided = tiny.generate(TaskSpec(guidance_scale=4.0, **spec)).frames
    assert not np.array_equal(plain, guided)
    # in one batch with a guided row (which doubles the batch), the scale-1 row is unchanged
    rows = tiny.generate([TaskSpec(**spec), TaskSpec(guidance_scale=4.0, **spec)])
    assert_same_pixels(rows[0].frames, plain)
    assert_same_pixels(rows[1].frames, guided)


def test_cancel_check_stops_sampling_between_steps(tiny):
    steps = []

    def cancel():
        return len(steps) >= 5

    with pytest.raises(GenerationCancelled):
        tiny.generate(
            TaskSpec(task=Task.text_to_video, prompt="x", seed=1),
            progress=lambda fraction, stage: steps.append(fraction),
            should_cancel=cancel,
        )
    assert len(steps) == 5  # it stopped at the first check after the fifth token


def test_progress_rises_to_one(tiny):
    seen = []
    tiny.generate(
        TaskSpec(task=Task.text_to_image, prompt="x", seed=1),
        progress=lambda f, stage: seen.append(f),
    )
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) > 3


def test_long_video_reaches_the_requested_seconds(tiny, clip):
    result = tiny.generate(
        TaskSpec(task=Task.text_to_video, prompt="x", seconds=4, seed=1, with_audio=True)
    )
    assert result.frames.shape[0] == 32
    assert result.audio.shape == (4 * SR,)
    extended = tiny.generate(
        TaskSpec(task=Task.continuation, seconds=3, seed=1),
        GenerationInputs(video=clip, video_fps=8.0),
    )
    assert extended.frames.shape[0] == 20 + 24


def test_a_long_videos_later_passes_decode_only_their_new_frames(tiny, monkeypatch):
    decoded: list[int] = []  # latent frames in each call into the decoder
    real = tiny.video_tokenizer.decoder.proj.forward

    def spy(z):
        decoded.append(z.shape[2])
        return real(z)

    monkeypatch.setattr(tiny.video_tokenizer.decoder.proj, "forward", spy)
    spec = TaskSpec(task=Task.text_to_video, prompt="x", seconds=4, seed=3)
    carried = tiny.generate(spec).frames
    # the first clip (5 latent frames), the first pass with its context (3 + 2), then 2 a pass
    assert decoded == [5, 5, 2]
    decoded.clear()
    monkeypatch.setattr(tiny, "carry_decoder", False)
    again = tiny.generate(spec).frames
    assert decoded == [5, 5, 5]  # each pass decodes its context again
    assert carried.shape == again.shape == (32, 32, 32, 3)
    # up to the first pass's frames the two ways decode the same codes
    assert np.abs(carried[:25].astype(int) - again[:25].astype(int)).max() <= 1


def test_continuation_keeps_the_input_frames(tiny, clip):
    result = tiny.generate(
        TaskSpec(task=Task.continuation, seed=1), GenerationInputs(video=clip, video_fps=8.0)
    )
    # the input is resized to the model's 32x32; its frames lead the output unchanged
    from models.conditioning import resize_frames

    np.testing.assert_array_equal(result.frames[:20], resize_frames(clip, 32, 32))


def test_inputs_are_resampled_to_the_model_frame_rate(tiny, clip):
    # 20 frames at 16 fps are 1.25 s: 10 frames at the model's 8 fps, then one step of 8
    result = tiny.generate(
        TaskSpec(task=Task.continuation, seed=1), GenerationInputs(video=clip, video_fps=16.0)
    )
    assert result.frames.shape[0] == 18


@pytest.mark.parametrize(
    "spec, inputs, message",
    [
        (dict(task="text_to_video"), {}, "needs prompt"),
        (dict(task="stylize", prompt="x"), {}, "missing video"),
        (dict(task="image_to_video"), {"video": np.zeros((5, 8, 8, 3), np.uint8)}, "missing image"),
        (
            dict(task="text_to_video", prompt="x"),
            {"audio": np.zeros(100, np.float32)},
            "does not use audio",
        ),
        (dict(task="image_to_video"), {"image": np.zeros((8, 8), np.uint8)}, "(H, W, 3)"),
        (dict(task="continuation"), {"video": np.zeros((5, 8, 8, 3), np.float32)}, "uint8"),
        (
            dict(task="stylize", prompt="x", seconds=9),
            {"video": np.zeros((5, 8, 8, 3), np.uint8)},
            "too long",
        ),
        (dict(task="text_to_image", prompt="x", with_audio=True), {}, "still image"),
        (
            dict(task="inpaint", mask_box=(50, 50, 60, 60)),
            {"video": np.zeros((5, 8, 8, 3), np.uint8)},
            "outside",
        ),
    ],
)
def test_bad_inputs_raise_a_value_error_that_says_what_is_expected(tiny, spec, inputs, message):
    with pytest.raises(ValueError, match=None) as err:
        tiny.generate(TaskSpec(**spec), GenerationInputs(**inputs))
    assert message in str(err.value)


def test_spec_rejects_bad_fields_with_what_is_accepted():
    with pytest.raises(ValueError, match="mask_box"):
        TaskSpec(task="inpaint", mask_box=(10, 10, 5, 20))
    with pytest.raises(ValueError, match="task"):
        TaskSpec(task="dance")
    with pytest.raises(TaskSpecError, match="accepts no inputs"):
        TaskSpec(task="unconditional", prompt="hi").check_inputs(set())


def test_checkpoint_round_trip_gives_identical_outputs(tiny, tmp_path, clip):
    folder = tiny.save(tmp_path / "tiny-copy")
    assert sorted(p.name for p in folder.iterdir()) == [
        "audio_tokenizer.safetensors",
        "config.json",
        "lm.safetensors",
        "video_tokenizer.safetensors",
    ]
    loaded = load_pipeline(str(folder))
    for name in ("video_tokenizer", "audio_tokenizer", "lm"):
        ours, theirs = getattr(tiny, name).state_dict(), getattr(loaded, name).state_dict()
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert torch.equal(ours[key], theirs[key]), key
    for spec, inputs in [
        (TaskSpec(task=Task.text_to_video, prompt="a red circle", seed=5), GenerationInputs()),
        (TaskSpec(task=Task.video_to_audio, seed=5), GenerationInputs(video=clip, video_fps=8.0)),
    ]:
        a, b = tiny.generate(spec, inputs), loaded.generate(spec, inputs)
        np.testing.assert_array_equal(a.frames, b.frames)
        if a.audio is not None:
            np.testing.assert_array_equal(a.audio, b.audio)


def test_tiny_is_the_same_model_in_every_process(tiny):
    again = load_pipeline("tiny")
    for key, value in tiny.lm.state_dict().items():
        assert torch.equal(value, again.lm.state_dict()[key]), key


def test_describe_reports_the_paper_shapes_for_videopoet_1b():
    info = describe("videopoet-1b")
    assert info["vocabulary"]["special"] == 256
    assert info["vocabulary"]["visual"] == 262_144
    assert info["vocabulary"]["audio"] == 4_096
    assert info["tokens"] == {
        "video_17x128x128": 1280,
        "image_128x128": 256,
        "video_17x224x128": 2240,
        "audio_2.125s": 424,
    }
    assert 0.9e9 < info["parameters"]["lm"] < 1.1e9
    assert 7.5e9 < describe("videopoet-8b")["parameters"]["lm"] < 8.5e9
    assert info["context_length"] >= max(info["sequence_lengths"].values())


def test_unknown_model_names_the_accepted_ones():
    with pytest.raises(ValueError, match="tiny"):
        load_pipeline("no-such-model")


def test_generate_batch_keeps_each_row_on_its_own(tiny):
    specs = [
        TaskSpec(task=Task.text_to_video, prompt="a red circle", seed=3),
        TaskSpec(task=Task.text_to_video, prompt="a blue square", seed=4, top_k=5),
        TaskSpec(task=Task.text_to_video, prompt="a green line", seed=5),
        TaskSpec(task=Task.image_to_video, prompt="no image given", seed=6),
    ]
    seen: dict[int, list[float]] = {}
    dropped: set[int] = set()

    def progress(row, fraction, stage):
        seen.setdefault(row, []).append(fraction)
        if row == 1 and fraction > 0.3:
            dropped.add(1)  # cancelled while the batch samples

    results = tiny.generate_batch(specs, progress=progress, should_cancel=lambda: dropped)
    assert isinstance(results[3], TaskSpecError)  # fails alone, before sampling
    assert isinstance(results[1], GenerationCancelled)
    for spec, result in ((specs[0], results[0]), (specs[2], results[2])):
        assert_same_pixels(result.frames, tiny.generate(spec).frames)
    for row in (0, 2):
        assert seen[row] == sorted(seen[row]) and seen[row][-1] == 1.0

    # all rows of the batch dropped: sampling stops between two steps
    steps = []
    stopped = tiny.generate_batch(
        specs[:2],
        progress=lambda row, fraction, stage: steps.append(row),
        should_cancel=lambda: {0, 1} if len(steps) >= 10 else (),
    )
    assert all(isinstance(r, GenerationCancelled) for r in stopped) and len(steps) == 10


def test_a_cancel_between_sampling_and_decoding_cancels(tiny):
    """Cancelled after the last token but before the pixels: no half-made result comes back."""
    layout = tiny.layouts[Task.text_to_video]
    sampled = [i for i, f in enumerate(layout.structure[layout.prefix_len :]) if f < 0][-1] + 1
    steps = []
    specs = [
        TaskSpec(task=Task.text_to_video, prompt="a red circle", seed=1),
        TaskSpec(task=Task.text_to_video, prompt="a blue square", seed=2),
    ]
    with pytest.raises(GenerationCancelled):
        tiny.generate(
            specs,
            progress=lambda fraction, stage: steps.append(stage),
            should_cancel=lambda: len(steps) >= sampled,
        )
    assert len(steps) == sampled  # every token was sampled; the cancel came at the decode


def test_layouts_give_each_visual_token_its_frame_row_and_column(tiny):
    """The places `grid_positions` embeds: raster order within each visual segment, frame by
    frame; none for text, audio and markers. A switched-on config gets the grid's size."""
    frames, rows, cols = tiny.config.visual_grid()
    t2v = tiny.layouts[Task.text_to_video]
    coords = t2v.grid_coords()
    out = coords[t2v.segments["visual_out"]]
    assert out.tolist() == [
        [t, r, c] for t in range(frames) for r in range(rows) for c in range(cols)
    ]
    assert (coords[t2v.text_slice] == -1).all()
    assert int((coords[:, 0] >= 0).sum()) == frames * rows * cols  # markers have none
    i2v = tiny.layouts[Task.image_to_video]
    assert i2v.grid_coords()[i2v.segments["visual_in"]].tolist() == [
        [0, r, c] for r in range(rows) for c in range(cols)
    ]
    v2a = tiny.layouts[Task.video_to_audio]
    assert (v2a.grid_coords()[v2a.segments["audio_out"]] == -1).all()
    from models.pipeline import ModelConfig

    config = tiny.config.to_dict()
    config["lm"]["grid_positions"] = True  # as a user writes it into config.json
    assert ModelConfig.from_dict(config).lm.grid_size == (frames, rows, cols)
