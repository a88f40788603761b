"""The broad caption vocabulary (models/captions.py) and the words kept out of it: held-out
colour names, motion phrasings and style words never reach a training caption, word by word."""

import re

import numpy as np
import pytest

from models import captions as cap
from models import evaluate as ev
from models import shapes_av as av

N_CAPTIONS = 3000  # broad captions drawn per check


@pytest.fixture(scope="module")
def broad():
    """(spec, caption, what it chose) for clips of the training split, a third with two objects."""
    out = []
    for seed in range(N_CAPTIONS):
        spec = av.sample_clip_spec(seed, split="train", two_objects=seed % 3 == 0)
        text, parts = cap.compose(spec, np.random.default_rng([seed, 1]))
        out.append((spec, text, parts))
    return out


def _has_phrase(text: str, phrase: str) -> bool:
    return re.search(rf"(?<![a-z0-9]){re.escape(phrase.lower())}(?![a-z0-9])", text.lower())


def test_named_colours_map_by_rgb_to_the_world_hues():
    for hue, names in cap.COLOUR_NAMES.items():
        assert names[0] == hue and len(names) >= 5, hue  # the world's word first, and many
        assert all(cap.name_hue(n) == hue for n in names), hue
    for hue, names in cap.HELD_OUT_COLOURS.items():
        assert len(names) >= 2 and all(cap.name_hue(n) == hue for n in names), hue
    # greys, pastels, near-blacks and in-between hues are dropped
    for name in ("gray", "white", "pink", "orange", "light blue", "dodger blue", "brown"):
        assert cap.name_hue(name) is None, name
    # a name that says another world colour is dropped even where its RGB is near a hue
    assert cap.world_hue(cap.NAMED_COLOURS["light sea green"]) == "cyan"
    assert cap.name_hue("light sea green") is None
    # the world's own rendered colours read as themselves
    assert all(cap.world_hue(rgb) == c for c, rgb in av.COLOURS.items())


def test_held_out_words_are_disjoint_from_the_training_vocabulary():
    vocab = cap.vocabulary_words()
    colour_words = {w for ns in cap.HELD_OUT_COLOURS.values() for n in ns for w in cap.words_of(n)}
    assert not colour_words & vocab
    # nor part of a training word ("lime" in "limegreen"), nor the other way round
    assert not [(h, v) for h in colour_words for v in vocab if h in v or (len(v) > 3 and v in h)]
    for phrases in list(cap.HELD_OUT_MOTIONS.values()) + [
        cap.HELD_OUT_STYLE_PREFIXES,
        cap.HELD_OUT_STYLE_SUFFIXES,
    ]:
        for phrase in phrases:
            own = set(cap.words_of(phrase)) - cap.SHARED_WORDS
            assert own and not own & vocab, phrase  # a word of its own, never trained on
    # the eval's template rows' held-out phrasings: no word of theirs that the template
    # captions never used ("orb", "travelling", "ascending") is in the broad captions either
    template_words = {
        w for t in [p for ps in av._TRAIN_WORDS.values() for p in ps] for w in cap.words_of(t)
    }
    for attribute, phrases in av._HELDOUT_WORDS.items():
        for phrase in phrases:
            own = set(cap.words_of(phrase)) - cap.SHARED_WORDS - template_words - {attribute}
            assert not own & vocab, (attribute, phrase)


def test_held_out_motions_say_the_motion_their_key_names():
    for motion, phrases in cap.HELD_OUT_MOTIONS.items():
        assert len(phrases) >= 4
        for phrase in phrases:
            words = set(cap.words_of(phrase))
            if motion in ("left", "right"):
                assert motion in " ".join(words) and not {"up", "down"} & words, phrase
            elif motion == "diagonal":
                assert "right" in words and words & {"up", "top"}, phrase
            elif motion in ("up", "down"):
                sides = {"up": {"up", "upwards", "top"}, "down": {"down", "downwards", "bottom"}}
                assert words & sides[motion] and not {"left", "right"} & words, phrase


def test_broad_captions_never_hold_a_held_out_word(broad):
    vocab = cap.vocabulary_words()
    held = {w for ns in cap.HELD_OUT_COLOURS.values() for n in ns for w in cap.words_of(n)}
    for phrases in list(cap.HELD_OUT_MOTIONS.values()) + [
        cap.HELD_OUT_STYLE_PREFIXES,
        cap.HELD_OUT_STYLE_SUFFIXES,
    ]:
        held |= {w for p in phrases for w in cap.words_of(p)} - cap.SHARED_WORDS
    eval_phrases = [p for ps in av._HELDOUT_WORDS.values() for p in ps]
    eval_fragments = ("there is one", "colored background", "video of a", "the background is")
    for _, text, _ in broad:
        words = set(cap.words_of(text))
        assert words <= vocab, words - vocab  # vocabulary_words is the whole vocabulary
        assert not words & held, text
        assert not [p for p in eval_phrases + list(eval_fragments) if _has_phrase(text, p)], text


def _colour_phrases(hue: str) -> set[str]:
    """Every training way to say a world colour: its names, a shade before a one-word name,
    an -ish form."""
    names = cap.COLOUR_NAMES[hue]
    shaded = {f"{s} {n}" for s in cap.SHADES for n in names if " " not in n}
    return set(names) | shaded | ({cap.ISH[hue]} if hue in cap.ISH else set())


def test_broad_captions_name_what_is_in_the_clip(broad):
    for spec, text, parts in broad:
        assert parts["colour"] in _colour_phrases(spec.main.colour), text
        assert _has_phrase(text, parts["colour"]) and _has_phrase(text, parts["motion"]), text
        assert parts["motion"] in {p for f in cap.MOTION_PHRASES[spec.main.motion] for p in f}


def test_broad_captions_vary_and_fit_the_text_encoder(broad):
    from models.text_encoder import load_text_encoder

    texts = [t for _, t, _ in broad]
    assert len(set(texts)) == len(texts)
    styled = np.mean([p["style"] == "yes" for _, _, p in broad])
    assert 0.25 < styled < 0.45  # about STYLE_SHARE
    assert any(t.isupper() for t in texts) and any(t[0].isupper() for t in texts)
    assert any(t.endswith(".") for t in texts) and any(t[-1].isalpha() for t in texts)
    for hue in av.COLOURS:  # every training name of every hue is used
        used = {p["colour"] for s, _, p in broad if s.main.colour == hue}
        assert set(cap.COLOUR_NAMES[hue]) <= used, hue
    tokenizer = load_text_encoder("minilm").tokenizer
    longest = max(len(tokenizer.encode(t).ids) for t in texts)
    assert longest < 64  # never cut by the encoder's 64 tokens


def test_broad_is_a_phrasing_of_the_world_and_the_template_captions_stay():
    clip = av.generate_clip(11, phrasing="broad")
    spec = av.sample_clip_spec(11)
    assert clip.caption == cap.caption(spec, np.random.default_rng([11, 1]))
    assert clip.caption == av.make_caption(spec, "broad")
    # the eight templates (every checkpoint so far, the eval's rows) are as they were
    assert av.generate_clip(7).caption == (
        "the white frame shows a massive blue block going diagonally up right"
    )
    assert av.generate_clip(7, phrasing="heldout").caption == (
        "video of a square tile that is blue and giant, climbing diagonally towards the upper "
        "right; the background is white"
    )
    with pytest.raises(ValueError, match="phrasing"):
        av.caption(spec, np.random.default_rng(0), "other")


@pytest.mark.parametrize("words", cap.EVAL_WORDS)
def test_eval_captions_change_one_thing(words):
    for spec in av.heldout_specs(24):
        obj = spec.main
        own = av.make_caption(spec, "heldout")
        text = cap.eval_caption(spec, np.random.default_rng([spec.seed, 1]), words)
        if words.endswith("colour"):
            names = cap.COLOUR_NAMES if words == "train_colour" else cap.HELD_OUT_COLOURS
            used = [n for n in names[obj.colour] if n != obj.colour and _has_phrase(text, n)]
            assert used, text
            # the same template and words otherwise
            assert text.replace(max(used, key=len), obj.colour, 1) == own
        else:
            assert any(_has_phrase(text, p) for p in cap.HELD_OUT_MOTIONS[obj.motion]), text
        if words == "heldout_motion_style":
            plain = cap.eval_caption(spec, np.random.default_rng([spec.seed, 1]), "heldout_motion")
            assert plain in text and len(text) > len(plain)
            extra = text.replace(plain, " ")
            style = cap.HELD_OUT_STYLE_PREFIXES + cap.HELD_OUT_STYLE_SUFFIXES
            assert set(cap.words_of(extra)) <= {w for s in style for w in cap.words_of(s)}


def test_the_eval_has_a_row_per_held_out_word_set():
    assert [w for w, *_ in ev.WORD_ROWS] == list(cap.EVAL_WORDS)
