import json
import subprocess
import wave

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from models import shapes_av as av
from models import train
from models.pipeline import ModelConfig, TaskShapes, load_pipeline
from models.spec import Task, TaskSpec
from models.video_tokenizer import VideoTokenizer


def _run(stage, out, *extra):
    return train.main_train(
        [stage, "--config", "tiny", "--out", str(out), "--threads", "1", *extra]
    )


def _log(out, component):
    return [
        json.loads(line) for line in (out / "train" / f"{component}.jsonl").read_text().splitlines()
    ]


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory):
    """A tiny run folder with both tokenizers trained a step and LM data for 6 clips."""
    out = tmp_path_factory.mktemp("run")
    _run("video-tokenizer", out, "--steps", "1", "--batch", "1")
    _run("audio-tokenizer", out, "--steps", "1", "--batch", "1")
    _run("lm", out, "--steps", "1", "--batch", "2", "--clips", "6")
    return out


@pytest.mark.parametrize(("entropy_tokens", "chroma"), [("all", "0"), ("foreground", "0"), ("all", "1")])
def test_video_tokenizer_steps_lower_the_loss(tmp_path, entropy_tokens, chroma):
    clips = np.stack(
        [train.ShapesAVData(ModelConfig.from_name("tiny").card)[i].frames[:5] for i in range(4)]
    )
    x = VideoTokenizer.frames_to_tensor(clips)
    config = ModelConfig.from_name("tiny").video

    def loss(model):
        model.eval()
        with torch.no_grad():
            return float((model(x).reconstruction - x).abs().mean())

    torch.manual_seed(0)
    before = loss(VideoTokenizer(config))  # the same init the run starts from (seed 0)
    _run(
        "video-tokenizer",
        tmp_path,
        "--steps",
        "30",
        "--batch",
        "4",
        "--lr",
        "3e-3",
        "--data",
        "shapes-av:4",
        "--crop-frames",
        "5",
        "--entropy-tokens",
        entropy_tokens,
        "--entropy-weight",
        "0.05",
        "--chroma-weight",
        chroma,
    )
    trained = VideoTokenizer(config)
    trained.load_state_dict(load_file(str(tmp_path / "video_tokenizer.safetensors")))
    assert loss(trained) < 0.6 * before
    log = _log(tmp_path, "video_tokenizer")
    assert log[-1]["step"] == 30
    assert ("chroma" in log[-1]) == (chroma != "0")



def test_adversarial_run_resumes_with_its_discriminator(tmp_path):
    args = ["--steps", "4", "--batch", "2", "--data", "shapes-av:4", "--crop-frames", "5",
            "--adversarial-weight", "0.5", "--adversarial-warmup", "1", "--log-every", "1"]
    split, straight = tmp_path / "split", tmp_path / "straight"
    _run("video-tokenizer", split, *args, "--stop-at", "2")
    _run("video-tokenizer", split, *args, "--resume")
    _run("video-tokenizer", straight, *args)
    log = _log(split, "video_tokenizer")
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert all("disc" in r and "adv" in r for r in log)
    state = torch.load(split / "train" / "video_tokenizer.pt", weights_only=True)
    assert state["disc_steps"] == 4
    # the discriminator is training state only: the shipped weights are the tokenizer's
    a = load_file(str(split / "video_tokenizer.safetensors"))
    assert set(a) == set(VideoTokenizer(ModelConfig.from_name("tiny").video).state_dict())
    # had the resumed run started a fresh discriminator, its loss would steer steps 3-4 apart
    b = load_file(str(straight / "video_tokenizer.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    assert [r["loss"] for r in log] == pytest.approx([r["loss"] for r in _log(straight, "video_tokenizer")])

def test_audio_tokenizer_shift_term_replaces_the_waveform_term(tmp_path):
    """--wave-weight 0 --shift-weight W: the loss is the spectral term, the quantizer's and W
    times how far the latents move under a delay; the waveform L1 is logged, not counted."""
    from models.audio_tokenizer import AudioTokenizer

    _run("audio-tokenizer", tmp_path, "--steps", "3", "--batch", "2", "--data", "shapes-av:4",
         "--wave-weight", "0", "--shift-weight", "3", "--log-every", "1")
    for r in _log(tmp_path, "audio_tokenizer"):
        assert r["shift"] > 0
        assert r["loss"] == pytest.approx(r["stft"] + r["aux"] + 3 * r["shift"], abs=5e-5)  # 5-decimal logs
    model = AudioTokenizer(ModelConfig.from_name("tiny").audio)
    audio = torch.from_numpy(np.stack([av.generate_clip(s).audio[:4000] for s in range(2)]))
    with torch.no_grad():
        assert float(train.shift_distance(model, audio[:, 80:], audio[:, 80:])) == 0
        assert float(train.shift_distance(model, audio[:, 80:], audio[:, 40:-40])) > 0


def test_colour_differences_tell_the_palette_apart_and_ignore_grey():
    from models import shapes_av as av

    rgb = torch.tensor(list(av.COLOURS.values()) + [(0, 0, 0), (128, 128, 128), (255, 255, 255)])
    x = (rgb.float() / 127.5 - 1)[:, :, None, None, None]  # (9, 3, 1, 1, 1)
    d = train.colour_differences(x).flatten(1)
    palette, grey = d[: len(av.COLOURS)], d[len(av.COLOURS) :]
    assert torch.cdist(palette, palette).add(torch.eye(len(palette)) * 9).min() > 0.5
    assert grey.abs().max() < 1e-6


def test_lm_steps_lower_the_loss(tokenized):
    run = train.Run(tokenized, "lm", "tiny")
    d = torch.load(tokenized / "train" / "lm_data.pt", weights_only=True)
    shapes = TaskShapes(run.config)
    layout = shapes.layouts()[Task.text_to_video]
    rng = np.random.default_rng(0)
    b = train._lm_batch(Task.text_to_video, d, np.arange(6), layout, run.config.vocab, shapes, rng)

    def loss():
        lm = load_pipeline(str(tokenized)).lm
        with torch.no_grad():
            return float(train.lm_loss(lm, b["batch"], run.config.vocab, b["text_len"]))

    before = loss()
    _run("lm", tokenized, "--steps", "40", "--batch", "6", "--lr", "5e-3", "--resume")
    assert loss() < before - 0.5


def test_resume_continues_from_the_saved_step(tmp_path, tokenized):
    import shutil

    for name in ("config.json", "video_tokenizer.safetensors", "audio_tokenizer.safetensors"):
        shutil.copy(tokenized / name, tmp_path / name)
    (tmp_path / "train").mkdir()
    shutil.copy(tokenized / "train" / "lm_data.pt", tmp_path / "train" / "lm_data.pt")
    straight = tmp_path / "straight"
    shutil.copytree(tmp_path, straight)

    _run("lm", tmp_path, "--steps", "6", "--stop-at", "3", "--batch", "2", "--log-every", "1")
    with pytest.raises(SystemExit):  # an existing run is never overwritten silently
        _run("lm", tmp_path, "--steps", "6", "--batch", "2")
    _run("lm", tmp_path, "--steps", "6", "--batch", "2", "--log-every", "1", "--resume")
    assert [r["step"] for r in _log(tmp_path, "lm")] == [1, 2, 3, 4, 5, 6]
    state = torch.load(tmp_path / "train" / "lm.pt", weights_only=True)
    assert state["step"] == 6

    # the resumed run ends where an uninterrupted one does
    _run("lm", straight, "--steps", "6", "--batch", "2", "--log-every", "1")
    a, b = load_file(str(tmp_path / "lm.safetensors")), load_file(str(straight / "lm.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    assert [r["loss"] for r in _log(straight, "lm")] == pytest.approx(
        [r["loss"] for r in _log(tmp_path, "lm")]
    )


def test_a_larger_clips_tokenizes_only_the_clips_it_adds(tmp_path, tokenized):
    """--clips 9 on a folder whose cache holds 6 clips adds clips 6 to 8: the cache then holds
    what one run with --clips 9 from nothing tokenizes, and the first 6 are kept as they were."""
    import shutil

    grown, fresh = tmp_path / "grown", tmp_path / "fresh"
    for folder in (grown, fresh):
        (folder / "train").mkdir(parents=True)
        for name in ("config.json", "video_tokenizer.safetensors", "audio_tokenizer.safetensors"):
            shutil.copy(tokenized / name, folder / name)
    _run("lm", grown, "--steps", "1", "--batch", "2", "--clips", "6")
    old = torch.load(grown / "train" / "lm_data.pt", weights_only=True)
    _run("lm", grown, "--steps", "2", "--batch", "2", "--clips", "9", "--resume")
    _run("lm", fresh, "--steps", "1", "--batch", "2", "--clips", "9")

    a = torch.load(grown / "train" / "lm_data.pt", weights_only=True)
    b = torch.load(fresh / "train" / "lm_data.pt", weights_only=True)
    assert len(old["video"]) == 6 and len(a["video"]) == len(b["video"]) == 9
    for k in ("video", "control", "audio"):
        assert torch.equal(a[k][:6], old[k])
        assert torch.equal(a[k], b[k])

    def states(d):  # each clip's caption states, trimmed to its length
        return [d["text"][c, : d["text_len"][c]] for c in d["caption"]]

    for x, y in zip(states(a), states(b), strict=True):
        torch.testing.assert_close(x, y)
    assert a["tokenizers"] == b["tokenizers"] == old["tokenizers"]

    _run("lm", grown, "--steps", "3", "--batch", "2", "--clips", "4", "--seed", "1", "--resume")  # other clips
    other = torch.load(grown / "train" / "lm_data.pt", weights_only=True)
    assert len(other["video"]) == 4 and other["source"] != a["source"]
    assert not torch.equal(other["video"], a["video"][:4])


def test_token_digest_follows_the_codes_not_the_decoder(tmp_path, tokenized):
    """The LM's cached clips stay valid when only a tokenizer's decoder changes (a
    --decoder-only run), and are tokenized again when its encoder or codebooks change."""
    from safetensors.torch import save_file

    for name in ("video_tokenizer", "audio_tokenizer"):
        tensors = load_file(str(tokenized / f"{name}.safetensors"))
        digest = train.token_digest(tokenized / f"{name}.safetensors")
        for part, same in (("decoder.", True), ("encoder.", False), ("quantizer.", False)):
            key = next((k for k in tensors if k.startswith(part) and tensors[k].is_floating_point()), None)
            if key is None:  # the tiny video quantizer has no float tensors
                continue
            changed = dict(tensors, **{key: tensors[key] + 0.01})
            save_file(changed, str(tmp_path / "t.safetensors"))
            assert (train.token_digest(tmp_path / "t.safetensors") == digest) is same, (name, key)


def _lm_step_from(tokenized, out, **lm_changes):
    """A run folder `out` with `tokenized`'s tokenizers, token cache and config (its LM's with
    `lm_changes`), after one LM step --init-from `tokenized` at a vanishing learning rate:
    (the source LM's tensors, the new ones)."""
    import shutil

    for name in ("video_tokenizer.safetensors", "audio_tokenizer.safetensors"):
        shutil.copy(tokenized / name, out / name)
    config = json.loads((tokenized / "config.json").read_text())
    config["lm"].update(lm_changes)
    (out / "config.json").write_text(json.dumps(config))
    (out / "train").mkdir()
    shutil.copy(tokenized / "train" / "lm_data.pt", out / "train" / "lm_data.pt")
    _run("lm", out, "--steps", "1", "--batch", "2", "--clips", "6", "--lr", "1e-9",
         "--init-from", str(tokenized))
    return load_file(str(tokenized / "lm.safetensors")), load_file(str(out / "lm.safetensors"))


def test_init_from_starts_a_new_run_from_another_folders_weights(tmp_path, tokenized):
    """--init-from DIR: fine-tuning starts from DIR's weights, not from a fresh init; a run
    with saved state resumes from that state instead."""
    import shutil

    source, tuned = _lm_step_from(tokenized, tmp_path)
    for k in source:  # one step at a vanishing learning rate: still the source's weights
        torch.testing.assert_close(tuned[k], source[k], rtol=1e-4, atol=1e-5)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for name in ("config.json", "video_tokenizer.safetensors", "audio_tokenizer.safetensors", "train"):
        (shutil.copytree if name == "train" else shutil.copy)(tmp_path / name, fresh / name)
    (fresh / "train" / "lm.pt").unlink()
    _run("lm", fresh, "--steps", "1", "--batch", "2", "--clips", "6", "--lr", "1e-9")
    scratch = load_file(str(fresh / "lm.safetensors"))
    assert any(not torch.allclose(scratch[k], source[k], atol=1e-3) for k in source)
    with pytest.raises(SystemExit, match="does not exist"):
        _run("lm", tmp_path / "other", "--steps", "1", "--init-from", str(tmp_path / "nowhere"))


@pytest.mark.parametrize("switch, tensors", [
    ("text_global", ["text_global.weight"]),
    ("grid_positions", ["grid.0.weight", "grid.1.weight", "grid.2.weight"]),
])
def test_a_path_added_to_a_trained_lm_starts_silent_and_is_learnt(tmp_path, tokenized, switch, tensors):
    """"text_global" (the caption path) or "grid_positions" (where each visual token is in the
    frame) switched on in a folder's LM config, fine-tuned --init-from an LM without it: the new
    tensors start at zero (the run starts from the old LM's predictions), are trained, and the
    loss and the generated tokens use them."""
    source, first = _lm_step_from(tokenized, tmp_path, **{switch: True})
    assert set(first) == set(source) | set(tensors)
    assert all(first[k].abs().max() < 1e-6 for k in tensors)  # silent: the old LM's predictions
    _run("lm", tmp_path, "--steps", "30", "--batch", "6", "--clips", "6", "--lr", "5e-3", "--resume")
    trained = load_file(str(tmp_path / "lm.safetensors"))
    assert all(trained[k].abs().max() > 1e-3 for k in tensors)

    pipe = load_pipeline(str(tmp_path))
    run = train.Run(tmp_path, "lm", "tiny")
    d = torch.load(tmp_path / "train" / "lm_data.pt", weights_only=True)
    shapes = TaskShapes(run.config)
    b = train._lm_batch(Task.text_to_video, d, np.arange(6), shapes.layouts()[Task.text_to_video],
                        run.config.vocab, shapes, np.random.default_rng(0), text_drop=0.0)
    spec = TaskSpec(task=Task.text_to_video, prompt="a small red circle moving left", seed=3, guidance_scale=1.0)
    with torch.no_grad():
        used = float(train.lm_loss(pipe.lm, b["batch"], run.config.vocab, b["text_len"]))
        made = pipe.generate([spec])[0].frames
        pipe.lm.clear_caches()  # lm_loss runs the model without a KV cache
        for name, p in pipe.lm.named_parameters():
            if name in tensors:
                p.zero_()
        silent = float(train.lm_loss(pipe.lm, b["batch"], run.config.vocab, b["text_len"]))
        unmade = pipe.generate([spec])[0].frames
    assert used != pytest.approx(silent, rel=1e-4)
    assert not np.array_equal(made, unmade)  # same seed: only the new tensors differ


def test_a_spectrum_encoder_run_starts_from_a_wave_tokenizers_decoder(tmp_path, tokenized):
    """--init-from across audio encoders: the decoder and codebooks come from the file, the
    new encoder starts fresh; with that encoder the waveform term is off by default (it cannot
    see the phase it would have to match)."""
    config = json.loads((tokenized / "config.json").read_text())
    config["audio_tokenizer"]["encoder_input"] = "spectrum"
    (tmp_path / "config.json").write_text(json.dumps(config))
    _run("audio-tokenizer", tmp_path, "--steps", "2", "--batch", "2", "--data", "shapes-av:4",
         "--lr", "1e-9", "--log-every", "1", "--init-from", str(tokenized))
    source = load_file(str(tokenized / "audio_tokenizer.safetensors"))
    tuned = load_file(str(tmp_path / "audio_tokenizer.safetensors"))
    decoder = [k for k in tuned if k.startswith("decoder.")]
    assert decoder and all(torch.allclose(tuned[k], source[k], atol=1e-5) for k in decoder)
    encoder = [k for k in tuned if k.startswith("encoder.")]
    assert encoder and all(k not in source or source[k].shape != tuned[k].shape for k in encoder)
    for r in _log(tmp_path, "audio_tokenizer"):
        assert r["loss"] == pytest.approx(r["stft"] + r["aux"], abs=2e-5)
    assert ModelConfig.from_dict(json.loads((tmp_path / "config.json").read_text())).audio.encoder_input == "spectrum"
    with pytest.raises(SystemExit, match="no tensor"):  # another stage's file fits nothing
        train.load_matching(torch.nn.Linear(3, 3), str(tokenized / "lm.safetensors"))


def test_input_noise_changes_only_the_output_the_lm_reads_back(tokenized):
    """--input-noise: output tokens, as fed back to the LM, become random codes of their own
    kind at each row's rate; the task's input (prefix), the layout's fixed tokens and the
    targets stay, and a noisy input changes the loss."""
    run = train.Run(tokenized, "lm", "tiny")
    d = torch.load(tokenized / "train" / "lm_data.pt", weights_only=True)
    shapes, vocab = TaskShapes(run.config), run.config.vocab
    lm = load_pipeline(str(tokenized)).lm
    for task in (Task.video_to_audio, Task.stylize):
        layout = shapes.layouts()[task]
        b = train._lm_batch(task, d, np.arange(3), layout, vocab, shapes, np.random.default_rng(0),
                            text_drop=0.0)
        batch = b["batch"]
        before = batch.ids.clone()
        g = torch.Generator().manual_seed(0)
        ids = train.corrupt_outputs(batch, vocab, torch.tensor([0.0, 0.5, 1.0]), g)
        assert torch.equal(batch.ids, before)  # the targets are not touched
        P = layout.prefix_len
        content = (torch.tensor(layout.structure) < 0) & (torch.arange(layout.length) >= P)
        assert torch.equal(ids[:, ~content], before[:, ~content])  # prefix and fixed tokens stay
        assert torch.equal(ids[0], before[0])  # rate 0: nothing changes
        changed = (ids != before)[:, content].float().mean(1)
        assert 0.3 < changed[1] < 0.7 and changed[2] > 0.95
        kinds = torch.tensor(layout.kinds)
        for kind in kinds[content].unique().tolist():
            lo, hi = vocab.code_range(kind)
            at = ids[:, content & (kinds == kind)]
            assert ((at >= lo) & (at < hi)).all()  # a random code of the same kind
        with torch.no_grad():
            clean = train.lm_loss(lm, batch, vocab, b["text_len"])
            noisy = train.lm_loss(lm, batch, vocab, b["text_len"], inputs=ids)
        assert float(clean) != pytest.approx(float(noisy), rel=1e-4)


def test_lm_loss_is_unchanged_by_cutting_text_padding(tokenized):
    run = train.Run(tokenized, "lm", "tiny")
    d = torch.load(tokenized / "train" / "lm_data.pt", weights_only=True)
    shapes = TaskShapes(run.config)
    lm = load_pipeline(str(tokenized)).lm
    for task in (Task.video_to_audio, Task.inpaint):
        b = train._lm_batch(
            task,
            d,
            np.arange(4),
            shapes.layouts()[task],
            run.config.vocab,
            shapes,
            np.random.default_rng(1),
        )
        with torch.no_grad():
            cut = train.lm_loss(lm, b["batch"], run.config.vocab, b["text_len"])
            full = train.lm_loss(lm, b["batch"], run.config.vocab, run.config.text_tokens)
        torch.testing.assert_close(cut, full, rtol=1e-4, atol=1e-4)


def test_changed_weight_counts_the_tokens_that_move_more(tokenized):
    """--changed-weight W: an output token that does not copy the previous latent frame's
    (frame 0's, and where something moved) counts W times in the LM's loss, in every video
    task; the copied ones count once."""
    run = train.Run(tokenized, "lm", "tiny")
    d = dict(torch.load(tokenized / "train" / "lm_data.pt", weights_only=True))
    shapes = TaskShapes(run.config)
    vocab = run.config.vocab
    lm = load_pipeline(str(tokenized)).lm
    video = d["video"][:4].long()
    video[:, 1:] = video[:, :1]  # a still scene...
    last = video.shape[1] - 1
    video[:, last, 0, :2] = (video[:, last, 0, :2] + 1) % vocab.visual_codes  # ...two tokens change last
    d["video"] = video.to(d["video"].dtype)
    assert int(train.changed_tokens(video).sum()) == 4 * 2
    per_frame = shapes.per_frame
    assert int(train.new_tokens(video).sum()) == 4 * (2 + per_frame)
    # the new tokens in each task's output: frame 0's are outputs of text_to_video and stylize
    new_out = {Task.text_to_video: 2 + per_frame, Task.stylize: 2 + per_frame,
               Task.image_to_video: 2, Task.continuation: 2}
    for task in new_out:
        layout = shapes.layouts()[task]

        def loss(w, task=task, layout=layout):
            b = train._lm_batch(task, d, np.arange(4), layout, vocab, shapes, np.random.default_rng(3),
                                changed_weight=w)
            assert (b["visual_weight"] is None) == (w == 1)
            with torch.no_grad():
                return float(train.lm_loss(lm, b["batch"], vocab, b["text_len"], b["visual_weight"]))

        n = layout.segments["visual_out"].stop - layout.segments["visual_out"].start
        mean = {w: loss(w) for w in (1, 2, 5)}
        assert mean[5] != pytest.approx(mean[1], rel=1e-4)  # the weights land on some tokens...
        total = {w: mean[w] * 4 * (n + (w - 1) * new_out[task]) for w in mean}  # ...on the new ones
        moved = total[2] - total[1]  # the CE on the new tokens
        assert moved > 0
        assert total[5] - total[1] == pytest.approx(4 * moved, rel=1e-3)


def _write_mp4(path, clip):
    import imageio_ffmpeg

    wav = path.with_suffix(".wav")
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(av.SAMPLE_RATE)
        w.writeframes((clip.audio * 32767).astype("<i2").tobytes())
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-v",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        "64x64",
        "-r",
        "8",
        "-i",
        "-",
        "-i",
        str(wav),
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-shortest",
        str(path),
    ]
    subprocess.run(cmd, input=clip.frames.tobytes(), check=True, timeout=60)


def test_jsonl_of_mp4_files_trains(tmp_path):
    clips = [av.generate_clip(i) for i in range(2)]
    lines = []
    for i, clip in enumerate(clips):
        _write_mp4(tmp_path / f"v{i}.mp4", clip)
        lines.append(json.dumps({"video": f"v{i}.mp4", "caption": clip.caption}))
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")

    card = ModelConfig.from_name("tiny").card
    data = train.JsonlVideoData(tmp_path / "data.jsonl", card)
    ex = data[0]
    assert ex.frames.shape[1:] == (card.height, card.width, 3) and 15 <= len(ex.frames) <= 18
    assert ex.caption == clips[0].caption
    assert abs(len(ex.audio) - len(ex.frames) / card.fps * card.sample_rate) < 2
    assert np.abs(ex.audio).max() > 0.02  # the soundtrack came through

    out = tmp_path / "run"
    _run(
        "video-tokenizer",
        out,
        "--steps",
        "2",
        "--batch",
        "1",
        "--data",
        str(tmp_path / "data.jsonl"),
    )
    assert (out / "video_tokenizer.safetensors").is_file()

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"video": "missing.mp4", "caption": "x"}) + "\n")
    with pytest.raises(ValueError, match="ffmpeg could not decode"):
        train.JsonlVideoData(bad, card)[0]


def test_foreground_marks_the_object():
    clip = av.generate_clip(0, size="large", shape="square", split="any")
    fg = train.foreground(VideoTokenizer.frames_to_tensor(clip.frames[None]))
    assert fg.shape == (1, 1, 17, 64, 64)
    side = 2 * av.SIZES["large"]
    assert abs(float(fg[0, 0, 0].sum()) - side * side) < 4 * side  # the square, edges aside


def test_task_weights_choose_the_tasks_an_lm_run_trains(tmp_path, tokenized):
    """--task-weights: 'task=w' changes a task's share, 0 leaves it out; a typo stops the run
    before anything is tokenized, naming the tasks it accepts."""
    import shutil

    weights = train.task_weights("video_to_audio=4, inpaint=0")
    assert weights[Task.video_to_audio] == 4 and weights[Task.inpaint] == 0
    assert weights[Task.text_to_video] == train.TASK_WEIGHTS[Task.text_to_video]
    for name in ("config.json", "video_tokenizer.safetensors", "audio_tokenizer.safetensors"):
        shutil.copy(tokenized / name, tmp_path / name)
    (tmp_path / "train").mkdir()
    shutil.copy(tokenized / "train" / "lm_data.pt", tmp_path / "train" / "lm_data.pt")
    only = ",".join(f"{t.value}=0" for t in train.TASK_WEIGHTS if t != Task.stylize)
    _run("lm", tmp_path, "--steps", "3", "--batch", "2", "--clips", "6", "--log-every", "1",
         "--task-weights", only)
    assert {k for r in _log(tmp_path, "lm") for k in r if k.startswith("loss_")} == {"loss_stylize"}
    for bad, message in (("video_to_sound=2", "not task=weight"), ("inpaint=-1", "weight >= 0"),
                         (only + ",stylize=0", "every task has weight 0")):
        with pytest.raises(SystemExit, match=message):
            _run("lm", tmp_path / "other", "--steps", "1", "--task-weights", bad)
    assert not (tmp_path / "other").exists()


def test_a_harmonic_tokenizer_learns_the_pitch_of_its_input(tmp_path):
    """harmonics > 0: each step also fits the harmonic source's pitch to the input's spectral
    peak (log2 distance, logged as `pitch`, counted in the loss), and that distance falls."""
    config = ModelConfig.from_name("tiny").to_dict()
    config["audio_tokenizer"].update(encoder_input="spectrum", harmonics=4)
    (tmp_path / "config.json").write_text(json.dumps(config))
    _run("audio-tokenizer", tmp_path, "--steps", "40", "--batch", "4", "--data", "shapes-av:8",
         "--lr", "3e-3", "--log-every", "1")
    log = _log(tmp_path, "audio_tokenizer")
    for r in log:
        assert r["loss"] == pytest.approx(r["stft"] + r["aux"] + r["pitch"], abs=5e-5)
    assert np.mean([r["pitch"] for r in log[-5:]]) < 0.5 * np.mean([r["pitch"] for r in log[:5]])


def test_decoder_only_trains_a_wider_decoder_on_the_same_tokens(tmp_path, tokenized):
    """--decoder-only: the encoder (so every token an LM was trained on) stays the
    --init-from checkpoint's, the decoder of the new widths learns to draw those codes, and
    the folder loads and generates as a whole; a run whose encoder would start untrained is
    refused before any step."""
    import shutil

    config = json.loads((tokenized / "config.json").read_text())
    config["video_tokenizer"].update(decoder_channels=8, decoder_channel_mult=[2, 3, 5])
    (tmp_path / "config.json").write_text(json.dumps(config))
    for name in ("audio_tokenizer.safetensors", "lm.safetensors"):
        shutil.copy(tokenized / name, tmp_path / name)
    args = ["--steps", "30", "--batch", "4", "--lr", "3e-3", "--data", "shapes-av:4",
            "--crop-frames", "5", "--log-every", "1", "--decoder-only"]
    with pytest.raises(SystemExit, match="--init-from"):
        _run("video-tokenizer", tmp_path, *args)
    assert not (tmp_path / "video_tokenizer.safetensors").exists()
    _run("video-tokenizer", tmp_path, *args, "--init-from", str(tokenized))

    source = load_file(str(tokenized / "video_tokenizer.safetensors"))
    tuned = load_file(str(tmp_path / "video_tokenizer.safetensors"))
    encoder = [k for k in tuned if k.startswith("encoder.")]
    assert encoder and all(torch.equal(tuned[k], source[k]) for k in encoder)
    assert tuned["decoder.proj.weight"].shape[0] == 8 * 5 != source["decoder.proj.weight"].shape[0]
    log = _log(tmp_path, "video_tokenizer")
    assert np.mean([r["l1"] for r in log[-5:]]) < 0.7 * np.mean([r["l1"] for r in log[:3]])
    assert all(r["aux"] == 0 for r in log)  # no quantizer term: the codes are not trained

    data = train.ShapesAVData(ModelConfig.from_name("tiny").card)
    x = VideoTokenizer.frames_to_tensor(np.stack([data[i].frames[:5] for i in range(2)]))
    old, new = load_pipeline(str(tokenized)), load_pipeline(str(tmp_path))
    assert torch.equal(old.video_tokenizer.encode(x), new.video_tokenizer.encode(x))
    out = new.generate([TaskSpec(task=Task.text_to_image, prompt="a red ball", seed=0)], None)
    assert out[0].frames.shape[-3:] == (32, 32, 3)

    other = json.loads((tokenized / "config.json").read_text())
    other["video_tokenizer"]["channels"] = 8  # another encoder: its codes are not these
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="does not fit"):
        _run("video-tokenizer", tmp_path / "other", *args, "--init-from", str(tokenized))
