import numpy as np
import pytest

from models import evaluate as ev
from models import shapes_av as av


def test_same_seed_same_clip_and_other_seed_other_clip():
    a, b = av.generate_clip(7), av.generate_clip(7)
    assert np.array_equal(a.frames, b.frames)
    assert np.array_equal(a.audio, b.audio)
    assert a.caption == b.caption and a.labels == b.labels
    c = av.generate_clip(8)
    assert not np.array_equal(a.frames, c.frames)
    assert a.frames.shape == (17, 64, 64, 3) and a.frames.dtype == np.uint8
    assert a.audio.shape == (34_000,) and a.audio.dtype == np.float32


def test_one_scene_renders_alike_at_64_and_128_and_deterministically_at_both():
    for seed in range(6):
        small = av.generate_clip(seed, two_objects=seed % 2 == 1)
        big = av.generate_clip(seed, two_objects=seed % 2 == 1, resolution=128)
        assert big.frames.shape == (17, 128, 128, 3) and big.frames.dtype == np.uint8
        assert np.array_equal(
            big.frames, av.generate_clip(seed, resolution=128, two_objects=seed % 2 == 1).frames
        )
        assert big.caption == small.caption and np.array_equal(big.audio, small.audio)
        # the 128x128 render's 2x2 means are the 64x64 render but for anti-aliased edge pixels
        pooled = big.frames.astype(np.float32).reshape(17, 64, 2, 64, 2, 3).mean(axis=(2, 4))
        diff = np.abs(pooled - small.frames.astype(np.float32))
        assert np.percentile(diff, 99) <= 20 and diff.mean() < 1.0
        # the object is where it was: the same pixels differ from the background
        bg = np.array(av.BACKGROUNDS[small.spec.background], np.float32)
        on_small = np.abs(small.frames.astype(np.float32) - bg).sum(-1) > 60
        on_big = np.abs(pooled - bg).sum(-1) > 60
        assert (on_small == on_big).mean() > 0.99
    with pytest.raises(ValueError, match="at least 8"):
        av.render_frames(av.generate_clip(0).spec, 4)


def test_heldout_combinations_never_reach_training():
    for seed in range(200):
        lab = av.generate_clip(seed, split="train").labels
        assert not av.is_heldout(lab["shape"], lab["colour"], lab["motion"])
    for spec in av.heldout_specs(30):
        obj = spec.main
        assert av.is_heldout(obj.shape, obj.colour, obj.motion)
    # what is held out is combinations: every attribute pair still occurs in training
    pairs = {
        (s, c)
        for s in av.SHAPES
        for c in av.COLOURS
        for m in av.MOTIONS
        if not av.is_heldout(s, c, m)
    }
    assert len(pairs) == len(av.SHAPES) * len(av.COLOURS)


def test_heldout_phrasings_differ_from_training_phrasings():
    train = {av.generate_clip(s).caption for s in range(100)}
    held = {av.generate_clip(s, phrasing="heldout").caption for s in range(100)}
    assert not train & held
    assert len(train) > 50  # templates, synonyms and word order vary


def test_motion_phrases_are_many_and_never_the_heldout_ones():
    for motion in av.MOTIONS:
        train, held = av._TRAIN_WORDS[motion], av._HELDOUT_WORDS[motion]
        assert len(train) >= 10, motion  # many ways to say each motion
        # no held-out phrase is, or contains, a training one, nor the other way round
        assert not [(t, h) for t in train for h in held if t in h or h in t], motion


@pytest.mark.parametrize("motion", ["up", "down"])
def test_pitch_follows_height(motion):
    clip = av.generate_clip(3, shape="circle", colour="red", motion=motion, split="any")
    pitch = ev.frame_pitch(clip.audio)
    _, cy = clip.spec.main.centre(np.arange(av.FRAMES))
    # measured from the samples: the note rises as the object rises
    assert np.corrcoef(np.log2(pitch), av.height(cy))[0, 1] > 0.98
    assert (pitch[-1] > pitch[0]) == (motion == "up")


def test_timbre_follows_shape_and_loudness_follows_size():
    for seed, shape in enumerate(av.SHAPES):
        for size in av.SIZES:
            clip = av.generate_clip(seed, shape=shape, size=size, split="any")
            assert ev.classify_timbre(clip.audio) == av.TIMBRES[shape]
            assert ev.classify_loudness(clip.audio) == size


def test_analysers_read_the_true_clips():
    specs = av.heldout_specs(24)
    clips = [av.make_clip(s) for s in specs]
    for clip in clips:
        lab = clip.labels
        assert ev.dominant_colour(clip.frames) == lab["colour"]
        assert ev.classify_shape(clip.frames) == lab["shape"]
        assert ev.classify_size(clip.frames) == lab["size"]
        assert ev.classify_motion(clip.frames) == lab["motion"]
        assert ev.classify_background(clip.frames) == lab["background"]
    assert ev.pitch_correlation([c.audio for c in clips], specs) > 0.95


def test_two_objects_mix_two_voices():
    one = av.generate_clip(5)
    two = av.generate_clip(5, two_objects=True)
    assert len(two.spec.objects) == 2 and " and a " in two.caption
    assert not np.array_equal(one.audio, two.audio)


def test_objects_start_in_their_start_box_and_stay_in_the_frame():
    """start_box is where sample_object draws starts: a mover's box lies on the side it leaves
    from (so frame 0 tells part of the motion), and every path stays inside the frame."""
    rng = np.random.default_rng(4)
    for _ in range(300):
        o = av.sample_object(rng, split="any")
        (xlo, xhi), (ylo, yhi) = av.start_box(o.size, o.motion)
        assert xlo <= o.x0 <= xhi and ylo <= o.y0 <= yhi
        dx, dy = av.motion_vector(o.motion)
        r = av.SIZES[o.size]
        for x, y in ((o.x0, o.y0), (o.x0 + dx, o.y0 + dy)):
            assert r <= x <= av.SIZE - r and r <= y <= av.SIZE - r
    (left_lo, _), _ = av.start_box("large", "left")
    (_, right_hi), _ = av.start_box("large", "right")
    assert right_hi < left_lo  # a large object moving left starts right of any moving right
