"""The super-resolution stage (models/super_resolution.py) on its tiny preset."""

import numpy as np
import pytest
import torch

from models.super_resolution import (
    AxisAttention,
    SRConfig,
    SuperResolution,
    masked_loss,
    sample,
)


def _model(**overrides) -> SuperResolution:
    torch.manual_seed(0)
    model = SuperResolution(SRConfig.from_name("tiny", **overrides))
    model.init_weights()
    return model.eval()


def _inputs(model: SuperResolution, B: int = 2):
    c = model.config
    g = torch.Generator().manual_seed(1)
    low = torch.randint(0, 2**c.codebook_bits, (B, *c.low_grid), generator=g)
    text = torch.randn(B, 6, c.text_dim, generator=g)
    mask = torch.ones(B, 6, dtype=torch.bool)
    mask[-1, 3:] = False  # the last row's caption is shorter
    return low, text, mask


def test_sampling_gives_the_high_resolution_token_grid_and_one_seed_one_output() -> None:
    model = _model()
    low, text, mask = _inputs(model)
    out = sample(model, low, text, mask, seeds=[5, 6], steps=4)
    assert out.shape == (2, 5, 8, 8) and out.dtype == torch.long  # (B, t, 2h, 2w)
    assert 0 <= int(out.min()) and int(out.max()) < 2**model.config.codebook_bits
    again = sample(model, low, text, mask, seeds=[5, 6], steps=4)
    assert torch.equal(out, again)
    other = sample(model, low, text, mask, seeds=[7, 8], steps=4)
    assert not torch.equal(out, other)
    greedy = sample(model, low, text, mask, seeds=[1, 2], steps=4, temperature=0)
    assert torch.equal(greedy, sample(model, low, text, mask, seeds=[3, 4], steps=4, temperature=0))


def test_given_tokens_come_out_as_given_and_the_rest_is_sampled() -> None:
    model = _model()
    low, text, mask = _inputs(model)
    c = model.config
    g = torch.Generator().manual_seed(2)
    given = torch.randint(0, 2**c.codebook_bits, (2, *c.grid), generator=g)
    cells = torch.zeros(2, *c.grid, dtype=torch.bool)
    cells[0, 0] = True  # row 0: its first latent frame (an image_to_video input)
    cells[1, :, :, :4] = True  # row 1: the left half of every frame (an outpaint's kept box)
    out = sample(model, low, text, mask, [5, 6], steps=4, given=given, given_mask=cells)
    assert torch.equal(out[cells], given[cells])
    assert not torch.equal(out[~cells], given[~cells])  # the others are the model's guesses
    plain = sample(model, low, text, mask, [5, 6], steps=4)
    assert torch.equal(
        plain,
        sample(
            model, low, text, mask, [5, 6], steps=4, given=given, given_mask=torch.zeros_like(cells)
        ),
    )
    everything = torch.ones_like(cells)
    assert torch.equal(
        sample(model, low, text, mask, [5, 6], steps=4, given=given, given_mask=everything), given
    )
    with pytest.raises(ValueError, match="given codes and given_mask"):
        sample(model, low, text, mask, [5, 6], given=given[:, :1], given_mask=cells[:, :1])


def test_guidance_1_is_plain_sampling_and_runs_no_unconditional_pass() -> None:
    model = _model()
    low, text, mask = _inputs(model)
    batches = []
    hook = model.register_forward_hook(lambda m, args, out: batches.append(args[0].shape[0]))
    plain = sample(model, low, text, mask, seeds=[5, 6], steps=3)
    assert batches == [2, 2, 2]  # one pass a step, the rows alone
    batches.clear()
    one = sample(model, low, text, mask, seeds=[5, 6], steps=3, guidance=1.0)
    assert torch.equal(plain, one) and batches == [2, 2, 2]
    batches.clear()
    guided = sample(model, low, text, mask, seeds=[5, 6], steps=3, guidance=4.0)
    assert batches == [4, 4, 4]  # conditional and unconditional rows together
    assert not torch.equal(plain, guided)
    hook.remove()


def test_factorized_codes_split_and_join_back() -> None:
    model = _model(code_groups=2)
    assert model.config.group_size == 16 and model.output.out_features == 32
    codes = torch.arange(256).view(4, 64)
    sub = model.split_codes(codes)
    assert sub.shape == (4, 64, 2) and int(sub.max()) == 15
    assert torch.equal(sub.view(-1, 2)[0x5A], torch.tensor([0x5, 0xA]))  # most significant first
    assert torch.equal(model.join_codes(sub), codes)
    low, text, mask = _inputs(model)
    out = sample(model, low, text, mask, seeds=[0, 1], steps=2)
    assert out.shape == (2, 5, 8, 8) and int(out.max()) < 256


def test_attention_stays_within_its_window() -> None:
    c = SRConfig.from_name("tiny", window=4)  # columns 0-3 and 4-7 are two windows
    torch.manual_seed(0)
    attn = AxisAttention(c, "w")
    x = torch.randn(1, 5, 8, 8, c.dim)
    y = attn(x)
    x2 = x.clone()
    x2[:, :, :, 1] += 1.0  # change a token of the first window
    y2 = attn(x2)
    assert torch.equal(y[..., 4:, :], y2[..., 4:, :])  # the second window never saw it
    assert not torch.allclose(y[..., :4, :], y2[..., :4, :])
    # and along time, every latent frame of a column sees every other
    t_attn = AxisAttention(c, "t")
    x3 = x.clone()
    x3[:, 0] += 1.0
    assert not torch.allclose(t_attn(x)[:, 4], t_attn(x3)[:, 4])


def test_masked_training_learns_the_tokens_of_a_clip() -> None:
    model = _model()
    model.train()
    c = model.config
    g = torch.Generator().manual_seed(3)
    high = torch.randint(0, 2**c.codebook_bits, (2, *c.grid), generator=g)
    low, text, mask = _inputs(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss = masked_loss(model, high, low, text, mask, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert first > 4.5 and last < 1.0  # from chance (ln 256 = 5.5) to the clip
    # and sampling from nothing but the low-resolution tokens and the text draws it back
    model.eval()
    out = sample(model, low, text, mask, seeds=[0, 1], temperature=0)
    assert (out == high).float().mean() > 0.9


def test_weighted_tokens_are_learnt_first() -> None:
    """`--object-weight`'s loss: weights of one are the plain loss; tokens weighted up are
    learnt before the others."""
    g = torch.Generator().manual_seed(3)
    c = _model().config
    high = torch.randint(0, 2**c.codebook_bits, (2, *c.grid), generator=g)
    low, text, mask = _inputs(_model())

    def loss(model, weight, seed=5):
        return masked_loss(
            model, high, low, text, mask, torch.Generator().manual_seed(seed), weight
        )

    with torch.no_grad():
        assert torch.equal(loss(_model(), None), loss(_model(), torch.ones(2, *c.grid)))
    weight = torch.ones(2, *c.grid)
    weight[..., : c.grid[2] // 2] = 30.0  # the left half of every row counts 30 times
    model = _model().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(25):
        opt.zero_grad()
        loss(model, weight, seed=step).backward()
        opt.step()
    with torch.no_grad():  # every token masked: each one's loss
        logits = model(torch.full((2, *c.grid, 1), model.mask_id), low, text, mask)
        ce = torch.nn.functional.cross_entropy(
            logits.flatten(0, 4), high.flatten(), reduction="none"
        ).view(2, *c.grid)
    left, right = ce[..., : c.grid[2] // 2].mean(), ce[..., c.grid[2] // 2 :].mean()
    assert left < right - 1.0, (float(left), float(right))


def test_configs_that_cannot_work_are_refused_with_what_is_accepted() -> None:
    with pytest.raises(ValueError, match="split evenly"):
        SRConfig(codebook_bits=9, code_groups=2)
    with pytest.raises(ValueError, match="multiple of it"):
        SRConfig(grid=(5, 24, 24), window=16)
    with pytest.raises(ValueError, match="one of tiny, demo"):
        SRConfig.from_name("huge")
    model = _model()
    low, text, mask = _inputs(model)
    with pytest.raises(ValueError, match=r"expected high \(B, t, 8, 8, 1\)"):
        model(torch.zeros(1, 5, 6, 6, 1, dtype=torch.long), low[:1], None, None)
    with pytest.raises(ValueError, match="one seed per row"):
        sample(model, low, text, mask, seeds=[1])


# --- the stage in the pipeline ------------------------------------------------------------
@pytest.fixture(scope="module")
def sr_pipe(tmp_path_factory):
    from models.pipeline import load_pipeline
    from tests.models.sr_checkpoint import tiny_sr_checkpoint

    return load_pipeline(str(tiny_sr_checkpoint(tmp_path_factory.mktemp("tiny-sr"))))


def test_a_checkpoint_with_sr_serves_both_sizes_the_larger_by_default(sr_pipe) -> None:
    from models.spec import Task, TaskSpec

    assert sr_pipe.card.sizes == ["32x32", "64x64"] and sr_pipe.card.default_size == "64x64"
    spec = TaskSpec(task=Task.text_to_video, prompt="a red circle moves left", seed=4)
    big = sr_pipe.generate(spec)
    small = sr_pipe.generate(spec.model_copy(update={"size": "32x32"}))
    assert big.frames.shape == (17, 64, 64, 3) and small.frames.shape == (17, 32, 32, 3)
    assert big.timings["super_resolution"] > 0 and "super_resolution" not in small.timings
    assert np.array_equal(sr_pipe.generate(spec).frames, big.frames)  # one seed, one video
    # the stage samples from the low-resolution video: another seed, another video at both
    other = sr_pipe.generate(spec.model_copy(update={"seed": 5}))
    assert not np.array_equal(other.frames, big.frames)
    image = sr_pipe.generate(TaskSpec(task=Task.text_to_image, prompt="a blue square", seed=1))
    assert image.frames.shape == (1, 64, 64, 3)
    long = sr_pipe.generate(spec.model_copy(update={"seconds": 3.0}))
    assert long.frames.shape == (24, 64, 64, 3)  # a clip and a shorter window after it


def test_a_batch_mixes_sizes_and_each_row_is_its_solo_run(sr_pipe) -> None:
    from models.spec import Task, TaskSpec

    specs = [
        TaskSpec(task=Task.text_to_video, prompt="a green triangle moves up", seed=s, size=z)
        for s, z in ((1, None), (2, "32x32"), (3, "64x64"))
    ]
    rows = sr_pipe.generate_batch(specs)
    assert [r.frames.shape[1] for r in rows] == [64, 32, 64]
    for spec, row in zip(specs, rows):
        assert np.array_equal(sr_pipe.generate(spec).frames, row.frames)


def test_a_size_the_checkpoint_does_not_serve_is_refused(sr_pipe) -> None:
    from models.pipeline import load_pipeline
    from models.spec import Task, TaskSpec, TaskSpecError

    spec = TaskSpec(task=Task.text_to_video, prompt="x", size="128x128")
    with pytest.raises(TaskSpecError, match="makes 32x32, 64x64"):
        sr_pipe.generate(spec)
    with pytest.raises(TaskSpecError, match="makes 32x32$"):
        load_pipeline("tiny").generate(spec.model_copy(update={"size": "64x64"}))


def test_rows_of_a_continuous_batch_go_through_sr_as_they_would_alone(sr_pipe) -> None:
    from models.spec import GenerationInputs, Task, TaskSpec
    from tests.models.test_engine import _run

    specs = {
        k: TaskSpec(task=Task.text_to_video, prompt=f"shape {k}", seed=k, size=size)
        for k, size in enumerate(["64x64", "32x32", None])
    }
    batch = sr_pipe.continuous(specs[0], capacity=2)
    frames, _, previews = _run(batch, specs, {0: 0, 1: 3, 2: 4}, preview=True)
    for k, spec in specs.items():
        np.testing.assert_array_equal(frames[k], sr_pipe.generate(spec, GenerationInputs()).frames)
    assert frames[0].shape[1:3] == (64, 64) and frames[1].shape[1:3] == (32, 32)
    assert all(p.shape[1:3] == (32, 32) for p in previews[0])  # previews stay at the LM's size


def test_info_reports_the_stage_and_its_token_counts(tmp_path) -> None:
    from models.pipeline import describe
    from tests.models.sr_checkpoint import tiny_sr_checkpoint

    info = describe(str(tiny_sr_checkpoint(tmp_path / "ckpt")))
    assert info["sizes"] == ["32x32", "64x64"]
    sr = info["super_resolution"]
    assert sr["scale"] == 2 and sr["latent_grid"] == [5, 8, 8]
    assert sr["tokens_per_clip"] == 320 and sr["from_tokens_per_clip"] == 80
    assert info["parameters"]["super_resolution"] > 0
    assert describe("tiny")["super_resolution"] is None and describe("tiny")["sizes"] == ["32x32"]


def test_eval_reads_both_sizes_and_reports_the_stage(tmp_path) -> None:
    from models.evaluate import run_eval
    from tests.models.sr_checkpoint import tiny_sr_checkpoint

    folder = tiny_sr_checkpoint(tmp_path / "ckpt")
    rows = run_eval(str(folder), 3, tasks=["text_to_video", "super_resolution"])
    by = {(r.task, r.metric): r for r in rows}
    assert ("text_to_video", "shape accuracy") in by  # the LM's size
    big = by[("text_to_video 64x64", "shape accuracy")]
    assert big.truth == 1.0  # the analyser reads every true 64x64 render's shape
    assert by[("text_to_video 64x64", "motion accuracy")].truth == 1.0
    psnr = by[("super_resolution 64x64", "PSNR, tokenizer at this size")]
    assert psnr.unit == "dB" and psnr.chance > 0
    ceiling = by[("super_resolution 64x64", "shape, tokenizer at this size")]
    assert ceiling.truth == 1.0 and 0 <= ceiling.value <= 1
    for metric in ("PSNR, SR from the true codes", "PSNR, decoder alone (resized)"):
        assert by[("super_resolution 64x64", metric)].value > 0
    assert by[("super_resolution 64x64", "time added to a video")].value > -1  # measured


def test_eval_sr_guidance_runs_the_stage_at_that_scale(tmp_path, monkeypatch, capsys) -> None:
    import models.pipeline
    from models.evaluate import main_eval
    from tests.models.sr_checkpoint import tiny_sr_checkpoint

    folder = tiny_sr_checkpoint(tmp_path / "ckpt")
    real, scales = models.pipeline.sample_sr, []

    def recording(*args, **kwargs):
        scales.append(kwargs["guidance"])
        return real(*args, **kwargs)

    monkeypatch.setattr(models.pipeline, "sample_sr", recording)
    main_eval(
        ["--model", str(folder), "--n", "2", "--tasks", "text_to_video", "--sr-guidance", "3"]
    )
    assert scales and set(scales) == {3.0}
    assert "SR guidance 3.0" in capsys.readouterr().out.splitlines()[0]
    scales.clear()
    main_eval(["--model", str(folder), "--n", "2", "--tasks", "text_to_video"])
    assert scales and set(scales) == {1.0}  # the config's own


def test_an_input_at_the_larger_size_keeps_its_own_tokens_there(sr_pipe, monkeypatch) -> None:
    """image_to_video, inpaint and outpaint at 64x64 from a 64x64 input: the SR stage keeps the
    input's tokens at 64x64 where the output keeps the input (the LM sees it at 32x32)."""
    from models.spec import GenerationInputs, Task, TaskSpec
    from models.train.data import open_data
    from models.video_tokenizer import VideoTokenizer

    card = sr_pipe.card
    clip = open_data("shapes-av", card, seed=3, scale=2)[0].frames  # (17, 64, 64, 3)
    tok = sr_pipe.video_tokenizer

    def own_codes(frames):
        with torch.inference_mode():
            return tok.encode(VideoTokenizer.frames_to_tensor(frames))[0]

    def own_frames(codes):
        with torch.inference_mode():
            return VideoTokenizer.tensor_to_frames(tok.decode(codes[None]))[0]

    # image_to_video: the causal decoder's frame 0 reads latent frame 0 alone, so the video
    # starts with the input image as the tokenizer draws it at 64x64
    spec = TaskSpec(task=Task.image_to_video, prompt="a red circle", seed=2)
    big = sr_pipe.generate(spec, GenerationInputs(image=clip[0]))
    assert big.frames.shape == (17, 64, 64, 3)
    np.testing.assert_array_equal(big.frames[0], own_frames(own_codes(clip[:1]))[0])
    small = sr_pipe.generate(spec, GenerationInputs(image=clip[0, ::2, ::2]))  # a 32x32 input
    assert not np.array_equal(small.frames[0], big.frames[0])  # the stage drew frame 0 itself

    # inpaint and outpaint: the high-resolution codes the tokenizer decodes
    seen = []
    decode = tok.decode
    monkeypatch.setattr(tok, "decode", lambda codes: seen.append(codes.clone()) or decode(codes))
    codes = own_codes(clip)  # (5, 8, 8)
    box = (0, 0, 32, 64)  # the left half of the 64x64 input: latent columns 0 to 3
    for task, kept in ((Task.outpaint, slice(0, 4)), (Task.inpaint, slice(4, 8))):
        seen.clear()
        spec = TaskSpec(task=task, prompt="a shape", seed=1, mask_box=box)
        out = sr_pipe.generate(spec, GenerationInputs(video=clip, video_fps=card.fps))
        assert out.frames.shape == (17, 64, 64, 3)
        high = seen[-1][0]  # (5, 8, 8)
        assert torch.equal(high[..., kept], codes[..., kept]), task
        assert not torch.equal(high, codes), task  # the rest is the stage's


def test_a_stage_with_its_own_tokenizer_draws_the_larger_size_with_it(tmp_path, sr_pipe) -> None:
    """A checkpoint whose SR stage has its own video tokenizer: the larger size is read and
    drawn by that tokenizer; the card's size is still the LM's tokenizer's."""
    from models.pipeline import SR_TOKENIZER, describe, load_pipeline
    from models.spec import GenerationInputs, Task, TaskSpec
    from models.train.data import open_data
    from models.video_tokenizer import VideoTokenizer
    from tests.models.sr_checkpoint import tiny_sr_checkpoint

    folder = tiny_sr_checkpoint(tmp_path / "own", own_tokenizer=True)
    pipe = load_pipeline(str(folder))
    assert pipe.sr_video_tokenizer is not pipe.video_tokenizer
    info = describe(str(folder))
    assert info["super_resolution"]["own_tokenizer"] is True
    assert info["parameters"][SR_TOKENIZER] == info["parameters"]["video_tokenizer"]

    def round_trip(tok, frames):
        with torch.inference_mode():
            x = VideoTokenizer.frames_to_tensor(frames)
            return VideoTokenizer.tensor_to_frames(tok.decode(tok.encode(x)))[0]

    clip = open_data("shapes-av", pipe.card, seed=3, scale=2)[0].frames  # (17, 64, 64, 3)
    spec = TaskSpec(task=Task.image_to_video, prompt="a red circle", seed=2)
    big = pipe.generate(spec, GenerationInputs(image=clip[0]))
    own = round_trip(pipe.sr_video_tokenizer, clip[:1])[0]
    np.testing.assert_array_equal(big.frames[0], own)
    assert not np.array_equal(own, round_trip(pipe.video_tokenizer, clip[:1])[0])
    # the card's own size: the LM's tokenizer, as in the checkpoint without it
    small = TaskSpec(task=Task.text_to_video, prompt="a red circle", seed=4, size="32x32")
    np.testing.assert_array_equal(pipe.generate(small).frames, sr_pipe.generate(small).frames)

    (folder / f"{SR_TOKENIZER}.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="--sr-tokenizer-from"):
        load_pipeline(str(folder))
