"""The broad caption vocabulary of Shapes-AV (issue #34, text fidelity), and the words kept out.

The frozen text encoder barely tells colour words apart, so an LM trained on six colour names
cannot know a seventh, and one never shown a distracting word is thrown by it. The captions
here name each rendered colour in many ways (named colours mapped by their RGB to the world's
six hues, with shade words), each motion with many verbs and constructions, sizes and shapes
likewise; they put style, quality and camera words before or after a share of captions, so
that the LM learns they change nothing, and vary case and punctuation.

- `caption(spec, rng)`: a broad caption of a clip (`shapes_av.generate_clip(...,
  phrasing="broad")`, `videopoet train lm --captions broad`). The eight fixed templates stay
  the default (`phrasing="train"`), so existing token caches, probes and eval rows do not move.
- `HELD_OUT_COLOURS`, `HELD_OUT_MOTIONS`, `HELD_OUT_STYLE_PREFIXES` / `_SUFFIXES`: words no
  training caption uses, for `videopoet eval`'s held-out-word rows (`eval_caption`);
  tests/models/test_captions.py keeps them disjoint from the training vocabulary word by word.
- `COLOUR_NAMES`: the training colour names of each hue, derived from `NAMED_COLOURS` by
  `world_hue`.

Everything is plain Python (no numpy beyond the caller's Generator): deterministic by rng.
"""

from __future__ import annotations

import colorsys
import re

import numpy as np

from models import shapes_av as av

# ---------------------------------------------------------------------------- colours

# The CSS / X11 named colours (the web's standard list; the near-whites, pastels and greys are
# listed too, and `world_hue` drops them), then a few common names outside it. RGB 0-255.
NAMED_COLOURS: dict[str, tuple[int, int, int]] = {
    "alice blue": (240, 248, 255), "antique white": (250, 235, 215), "aqua": (0, 255, 255),
    "aquamarine": (127, 255, 212), "azure": (240, 255, 255), "beige": (245, 245, 220),
    "bisque": (255, 228, 196), "blanched almond": (255, 235, 205), "blue": (0, 0, 255),
    "blue violet": (138, 43, 226), "brown": (165, 42, 42), "burlywood": (222, 184, 135),
    "cadet blue": (95, 158, 160), "chartreuse": (127, 255, 0), "chocolate": (210, 105, 30),
    "coral": (255, 127, 80), "cornflower blue": (100, 149, 237), "cornsilk": (255, 248, 220),
    "crimson": (220, 20, 60), "cyan": (0, 255, 255), "dark blue": (0, 0, 139),
    "dark cyan": (0, 139, 139), "dark goldenrod": (184, 134, 11), "dark green": (0, 100, 0),
    "dark khaki": (189, 183, 107), "dark magenta": (139, 0, 139),
    "dark olive green": (85, 107, 47), "dark orange": (255, 140, 0),
    "dark orchid": (153, 50, 204), "dark red": (139, 0, 0), "dark salmon": (233, 150, 122),
    "dark sea green": (143, 188, 143), "dark slate blue": (72, 61, 139),
    "dark turquoise": (0, 206, 209), "dark violet": (148, 0, 211), "deep pink": (255, 20, 147),
    "deep sky blue": (0, 191, 255), "dodger blue": (30, 144, 255), "firebrick": (178, 34, 34),
    "forest green": (34, 139, 34), "fuchsia": (255, 0, 255), "gold": (255, 215, 0),
    "goldenrod": (218, 165, 32), "gray": (128, 128, 128), "green": (0, 128, 0),
    "green yellow": (173, 255, 47), "hot pink": (255, 105, 180), "indian red": (205, 92, 92),
    "indigo": (75, 0, 130), "ivory": (255, 255, 240), "khaki": (240, 230, 140),
    "lavender": (230, 230, 250), "lawn green": (124, 252, 0), "lemon chiffon": (255, 250, 205),
    "light blue": (173, 216, 230), "light coral": (240, 128, 128), "light cyan": (224, 255, 255),
    "light green": (144, 238, 144), "light pink": (255, 182, 193),
    "light salmon": (255, 160, 122), "light sea green": (32, 178, 170),
    "light sky blue": (135, 206, 250), "light steel blue": (176, 196, 222),
    "light yellow": (255, 255, 224), "lime": (0, 255, 0), "lime green": (50, 205, 50),
    "linen": (250, 240, 230), "magenta": (255, 0, 255), "maroon": (128, 0, 0),
    "medium aquamarine": (102, 205, 170), "medium blue": (0, 0, 205),
    "medium orchid": (186, 85, 211), "medium purple": (147, 112, 219),
    "medium sea green": (60, 179, 113), "medium slate blue": (123, 104, 238),
    "medium spring green": (0, 250, 154), "medium turquoise": (72, 209, 204),
    "medium violet red": (199, 21, 133), "midnight blue": (25, 25, 112),
    "mint cream": (245, 255, 250), "misty rose": (255, 228, 225), "moccasin": (255, 228, 181),
    "navajo white": (255, 222, 173), "navy": (0, 0, 128), "old lace": (253, 245, 230),
    "olive": (128, 128, 0), "olive drab": (107, 142, 35), "orange": (255, 165, 0),
    "orange red": (255, 69, 0), "orchid": (218, 112, 214), "pale goldenrod": (238, 232, 170),
    "pale green": (152, 251, 152), "pale turquoise": (175, 238, 238),
    "pale violet red": (219, 112, 147), "papaya whip": (255, 239, 213),
    "peach puff": (255, 218, 185), "peru": (205, 133, 63), "pink": (255, 192, 203),
    "plum": (221, 160, 221), "powder blue": (176, 224, 230), "purple": (128, 0, 128),
    "rebecca purple": (102, 51, 153), "red": (255, 0, 0), "rosy brown": (188, 143, 143),
    "royal blue": (65, 105, 225), "saddle brown": (139, 69, 19), "salmon": (250, 128, 114),
    "sandy brown": (244, 164, 96), "sea green": (46, 139, 87), "seashell": (255, 245, 238),
    "sienna": (160, 82, 45), "silver": (192, 192, 192), "sky blue": (135, 206, 235),
    "slate blue": (106, 90, 205), "slate gray": (112, 128, 144), "snow": (255, 250, 250),
    "spring green": (0, 255, 127), "steel blue": (70, 130, 180), "tan": (210, 180, 140),
    "teal": (0, 128, 128), "thistle": (216, 191, 216), "tomato": (255, 99, 71),
    "turquoise": (64, 224, 208), "violet": (238, 130, 238), "wheat": (245, 222, 179),
    "white": (255, 255, 255), "yellow": (255, 255, 0), "yellow green": (154, 205, 50),
    # outside the CSS list
    "scarlet": (255, 36, 0), "vermilion": (227, 66, 52), "carmine": (150, 0, 24),
    "cardinal": (196, 30, 58), "candy apple red": (255, 8, 0), "cherry": (222, 49, 99),
    "lemon": (255, 247, 0), "lemon yellow": (255, 244, 79), "canary yellow": (255, 239, 0),
    "amber": (255, 191, 0), "mustard": (255, 219, 88), "saffron": (244, 196, 48),
    "school bus yellow": (255, 216, 0), "emerald": (80, 200, 120), "harlequin": (63, 255, 0),
    "neon green": (57, 255, 20), "electric green": (0, 255, 0), "india green": (19, 136, 8),
    "kelly green": (76, 187, 23), "cobalt": (0, 71, 171), "sapphire": (15, 82, 186),
    "ultramarine": (18, 10, 143), "egyptian blue": (16, 52, 166),
    "persian blue": (28, 57, 187), "duke blue": (0, 0, 156), "cerulean": (0, 123, 167),
    "verdigris": (67, 179, 174), "hot magenta": (255, 29, 206), "byzantium": (112, 41, 99),
    "phlox": (223, 0, 255), "mauve": (224, 176, 255),
}  # fmt: skip

MIN_SATURATION = 0.6  # below: a grey, a pastel or a near-white; no world hue
MIN_VALUE = 0.35  # below: near black
MAX_HUE_OFF = 15.0  # degrees from the nearest world hue; further: between two (orange, violet)
# Names whose everyday meaning is a colour family other than their RGB hue's (brown is dark
# red by RGB, olive dark yellow), or that name another family outright: left out.
AMBIGUOUS_WORDS = frozenset({"brown", "olive", "orange", "pink", "rose", "violet", "tan"})


def world_hue(rgb: tuple[int, int, int]) -> str | None:
    """The world colour (red, yellow, ...) whose hue is nearest this RGB's, or None for a grey,
    a pastel, a near-black or a hue about halfway between two (`MAX_HUE_OFF`)."""
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    if s < MIN_SATURATION or v < MIN_VALUE:
        return None
    h *= 360.0
    best = min(av.COLOUR_HUES, key=lambda c: abs((av.COLOUR_HUES[c] - h + 180) % 360 - 180))
    return best if abs((av.COLOUR_HUES[best] - h + 180) % 360 - 180) <= MAX_HUE_OFF else None


def name_hue(name: str) -> str | None:
    """`world_hue` of a named colour, None where the name itself says otherwise: an ambiguous
    family word, or a world colour word of another hue ("light sea green" is cyan by RGB)."""
    hue = world_hue(NAMED_COLOURS[name])
    words = set(name.split())
    if hue is None or words & AMBIGUOUS_WORDS:
        return None
    if words & (set(av.COLOURS) - {hue}):
        return None
    return hue


# Never in a training caption: `videopoet eval`'s held-out colour names (each maps by RGB to
# its hue; a test checks that and that no word of them is in the training vocabulary).
HELD_OUT_COLOURS: dict[str, list[str]] = {
    "red": ["crimson", "scarlet", "maroon"],
    "yellow": ["gold", "lemon"],
    "green": ["lime", "harlequin"],
    "cyan": ["teal", "aqua"],
    "blue": ["navy", "ultramarine"],
    "magenta": ["fuchsia", "byzantium"],
}
_HELD_OUT_COLOUR_WORDS = {
    w for names in HELD_OUT_COLOURS.values() for n in names for w in n.split()
}


def _training_colour_names() -> dict[str, list[str]]:
    names: dict[str, list[str]] = {c: [] for c in av.COLOURS}
    for name in NAMED_COLOURS:
        hue = name_hue(name)
        if hue is not None and not set(name.split()) & _HELD_OUT_COLOUR_WORDS:
            names[hue].append(name)
    return names


COLOUR_NAMES = _training_colour_names()  # hue -> its training names (the world's own first)
for _hue, _names in COLOUR_NAMES.items():  # the world's own word first: drawn most often
    _names.remove(_hue)
    _names.insert(0, _hue)

SHADES = ("deep", "light", "bright", "dark", "pale", "vivid", "rich", "soft", "pure", "strong")
ISH = {"red": "reddish", "yellow": "yellowish", "green": "greenish", "blue": "bluish"}

# ---------------------------------------------------------------------------- motions

# (gerund, third person, base) of the verbs that take a direction.
_VERBS = [
    ("moving", "moves", "move"), ("sliding", "slides", "slide"), ("drifting", "drifts", "drift"),
    ("gliding", "glides", "glide"), ("going", "goes", "go"), ("shifting", "shifts", "shift"),
    ("floating", "floats", "float"), ("passing", "passes", "pass"),
    ("sweeping", "sweeps", "sweep"), ("creeping", "creeps", "creep"),
    ("cruising", "cruises", "cruise"), ("sailing", "sails", "sail"),
    ("coasting", "coasts", "coast"), ("rolling", "rolls", "roll"),
    ("wandering", "wanders", "wander"), ("flying", "flies", "fly"),
    ("running", "runs", "run"), ("steering", "steers", "steer"),
]  # fmt: skip
_ENDS = {
    "left": ("left", "to the left", "leftwards", "leftward", "toward the left", "towards the left",
             "over to the left", "from right to left", "across from right to left"),
    "right": ("right", "to the right", "rightwards", "rightward", "toward the right",
              "towards the right", "over to the right", "from left to right",
              "across from left to right"),
    "up": ("up", "upwards", "higher", "toward the top", "towards the top of the frame",
           "from bottom to top", "straight up"),
    "down": ("down", "downwards", "lower", "toward the bottom", "towards the bottom of the frame",
             "from top to bottom", "straight down"),
    "diagonal": ("up and to the right", "up and right", "up to the right", "right and up",
                 "upwards and to the right", "to the right and upwards",
                 "up and over to the right"),
}  # fmt: skip
# Whole phrases (gerund, third person, base) for a motion, beside verb + direction.
_SET_PHRASES = {
    "left": [("crossing from right to left", "crosses from right to left",
              "cross from right to left")],
    "right": [("crossing from left to right", "crosses from left to right",
               "cross from left to right")],
    "up": [("rising", "rises", "rise"), ("soaring", "soars", "soar"),
           ("lifting off", "lifts off", "lift off"), ("rising higher", "rises higher",
           "rise higher")],
    "down": [("falling", "falls", "fall"), ("sinking", "sinks", "sink"),
             ("plunging", "plunges", "plunge"), ("coming down", "comes down", "come down"),
             ("falling lower", "falls lower", "fall lower")],
    "diagonal": [("rising to the right", "rises to the right", "rise to the right")],
    "still": [
        ("staying still", "stays still", "stay still"),
        ("not moving", "does not move", "not move"),
        ("resting in place", "rests in place", "rest in place"),
        ("standing still", "stands still", "stand still"),
        ("holding still", "holds still", "hold still"),
        ("keeping still", "keeps still", "keep still"),
        ("sitting still", "sits still", "sit still"),
        ("frozen in place", "is frozen in place", "be frozen in place"),
        ("at rest", "is at rest", "be at rest"),
        ("staying put", "stays put", "stay put"),
        ("remaining in place", "remains in place", "remain in place"),
        ("not going anywhere", "goes nowhere", "go nowhere"),
        ("hovering in place", "hovers in place", "hover in place"),
        ("staying where it is", "stays where it is", "stay where it is"),
    ],
}  # fmt: skip


def _motion_phrases() -> dict[str, list[tuple[str, str, str]]]:
    out = {}
    for motion in av.MOTIONS:
        composed = [
            (f"{g} {e}", f"{t} {e}", f"{b} {e}")
            for g, t, b in _VERBS
            for e in _ENDS.get(motion, ())
        ]
        out[motion] = composed + _SET_PHRASES.get(motion, [])
    return out


MOTION_PHRASES = _motion_phrases()  # motion -> [(gerund, third person, base), ...]

# Never in a training caption: each is a verb or construction no training phrase has (a test
# checks their words, less direction and function words, against the training vocabulary).
# The eval's template rows use shapes_av's held-out phrasings, also kept out of training.
HELD_OUT_MOTIONS: dict[str, list[str]] = {
    "left": ["scooting left", "zipping over to the left", "darting leftwards",
             "making its way to the left", "hurrying toward the left edge"],
    "right": ["scooting right", "zipping over to the right", "darting rightwards",
              "making its way to the right", "hurrying toward the right edge"],
    "up": ["scooting up", "zipping upwards", "darting up", "making its way up",
           "hurrying toward the top edge"],
    "down": ["scooting down", "zipping downwards", "darting down", "making its way down",
             "hurrying toward the bottom edge"],
    "still": ["not budging", "idling in one spot", "fixed in one spot", "unmoving",
              "not budging at all"],
    "diagonal": ["scooting up and to the right", "zipping up and right",
                 "darting up and to the right", "making its way up and to the right",
                 "hurrying toward the top right edge"],
}  # fmt: skip

# ---------------------------------------------------------------------------- shapes, sizes

SHAPE_WORDS = {
    "circle": ["circle", "ball", "disc", "disk", "dot", "round dot", "round shape", "sphere",
               "round blob", "circular shape"],
    "square": ["square", "box", "block", "square shape", "quadrilateral", "squarish block",
               "square block", "squared-off shape"],
    "triangle": ["triangle", "wedge", "pyramid shape", "pyramid", "triangle shape", "arrowhead",
                 "pointy shape"],
}  # fmt: skip
SIZE_WORDS = {
    "small": ["small", "little", "tiny", "mini", "compact", "modest", "small-scale", "wee",
              "undersized"],
    "large": ["large", "big", "huge", "massive", "enormous", "oversized", "hefty", "jumbo",
              "bulky", "sizable"],
}  # fmt: skip
BACKGROUND_WORDS = {
    "black": ["black", "jet-black", "pitch-black", "inky black", "coal-black"],
    "gray": ["gray", "grey", "neutral gray", "mid-grey", "slate-grey", "ash-gray"],
    "white": ["white", "snow-white", "plain white", "off-white", "chalk-white"],
}  # fmt: skip

# ---------------------------------------------------------------------------- style words

# Added before or after a share of captions: words of look, quality and camera that change
# nothing in the clip, so the LM learns to read past them.
STYLE_PREFIXES = [
    "cinematic shot:", "cinematic 4k shot:", "4k video:", "hd footage:", "stock footage:",
    "animation:", "3d render:", "high quality animation of", "professional footage of",
    "static camera:", "shot on 35mm:", "film still:", "tripod shot:", "minimalist animation:",
    "clean vector animation:", "award winning video:",
]  # fmt: skip
STYLE_SUFFIXES = [
    "8k", "4k", "uhd", "hdr", "highly detailed", "trending on artstation", "photorealistic",
    "hyperrealistic", "masterpiece", "best quality", "high quality", "sharp focus",
    "studio lighting", "soft lighting", "octane render", "unreal engine", "award winning",
    "shot on 35mm", "film grain", "cinematic", "vibrant", "minimalist", "static camera",
    "locked-off camera", "smooth animation", "professional", "high resolution",
    "detailed render", "crisp", "digital art",
]  # fmt: skip
STYLE_SHARE = 0.35  # captions that get style words
# Never in a training caption (no word of them, less function words, is a training word).
HELD_OUT_STYLE_PREFIXES = ["dslr photograph:", "polaroid snapshot:", "concept sketch:", "imax:",
                           "behance showcase:"]  # fmt: skip
HELD_OUT_STYLE_SUFFIXES = ["volumetric fog", "ray tracing", "depth of field", "intricate",
                           "epic composition", "by greg rutkowski", "dolby vision", "16k",
                           "vray", "bokeh", "moody atmosphere"]  # fmt: skip

# Words a held-out phrase may share with training (directions and function words): the
# disjointness test ignores them.
SHARED_WORDS = frozenset(
    "a an the to of and in on at its it one not over off toward towards from is "
    "left right up down upwards downwards leftwards rightwards top bottom".split()
)

# ---------------------------------------------------------------------------- captions

# {np}: the object (a noun phrase with its article), {ger} / {fin} / {base}: its motion as a
# gerund ("sliding left"), third person ("slides left") or base form ("slide left"), {bg}: the
# background colour. None of them uses the eval's held-out template wording.
_TEMPLATES = [
    "{np} {ger} on a {bg} background",
    "{np} {fin} over a {bg} background",
    "on a {bg} background, {np} {fin}",
    "{np} {fin}",
    "{np} {ger}",
    "{ger}: {np} against {bg}",
    "{np}, {ger}, {bg} backdrop",
    "{np} that {fin}, in front of a {bg} backdrop",
    "{np} {fin} on a plain {bg} surface",
    "{bg} background; {np} {fin}",
    "watch {np} {base} on a {bg} background",
    "a {bg} scene in which {np} {fin}",
    "{np} is {ger} over {bg}",
    "in this clip {np} {fin} on {bg}",
    "{np} on a {bg} background. it {fin}",
    "here, {np} {fin} against a {bg} backdrop",
    "{np}, which {fin}, on a {bg} background",
    "{np} seen {ger} in front of {bg}",
]
# The object as a noun phrase: {size}, {colour} (a colour phrase), {shape}.
_NOUN_PHRASES = [
    "a {size} {colour} {shape}",
    "a {colour} {size} {shape}",
    "a {size} {shape} in {colour}",
    "a {size} {colour}-coloured {shape}",
    "a {size} {colour}-colored {shape}",
    "a {size} {shape} coloured {colour}",
    "one {size} {colour} {shape}",
    "the {size} {colour} {shape}",
    "a {colour} {shape}, {size},",
]


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def colour_phrase(colour: str, rng: np.random.Generator) -> str:
    """One of the training ways to name a world colour: a named colour of its hue (the world's
    own word a third of the time), a shade word before a one-word name now and then, or an
    -ish form."""
    u = rng.random()
    if u < 0.3:
        name = colour
    elif u < 0.35 and colour in ISH:
        return ISH[colour]
    else:
        name = _pick(rng, COLOUR_NAMES[colour])
    if " " not in name and rng.random() < 0.3:
        name = f"{_pick(rng, SHADES)} {name}"
    return name


def _with_articles(text: str) -> str:
    """ "a" before a vowel made "an"."""
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def _style(text: str, rng: np.random.Generator, prefixes, suffixes) -> str:
    """Style words before (40 %), after (40 %) or on both sides (20 %) of the text."""
    u = rng.random()
    if u < 0.6:  # a suffix of one to three items
        k = int(rng.integers(1, 4))
        items = [suffixes[i] for i in rng.choice(len(suffixes), k, replace=False)]
        sep = _pick(rng, [", ", ", ", ", ", " | "])
        text = text + sep + sep.join(items)
    if u >= 0.4:
        text = f"{_pick(rng, prefixes)} {text}"
    return text


def _case_and_punctuation(text: str, rng: np.random.Generator) -> str:
    u = rng.random()
    if u < 0.3:
        text = text[0].upper() + text[1:]
    elif u < 0.38:
        text = text.title()
    elif u < 0.43:
        text = text.upper()
    u = rng.random()
    if u < 0.35:
        text += "."
    elif u < 0.4:
        text += "!"
    elif u < 0.43:
        text += "..."
    return text


def describe(obj: av.ObjectSpec, rng: np.random.Generator) -> tuple[str, dict[str, str]]:
    """A noun phrase for the object and its motion forms: (noun phrase, {"colour": the colour
    phrase, "ger"/"fin"/"base": the motion phrase's forms})."""
    colour = colour_phrase(obj.colour, rng)
    noun = _pick(rng, _NOUN_PHRASES).format(
        size=_pick(rng, SIZE_WORDS[obj.size]),
        colour=colour,
        shape=_pick(rng, SHAPE_WORDS[obj.shape]),
    )
    ger, fin, base = _pick(rng, MOTION_PHRASES[obj.motion])
    return noun, {"colour": colour, "ger": ger, "fin": fin, "base": base}


def compose(spec: av.ClipSpec, rng: np.random.Generator) -> tuple[str, dict[str, str]]:
    """A broad caption of the clip and what it chose for the main object ({"colour": the colour
    phrase, "motion": the motion phrase as written, "style": "yes"/"no"}), for the probes."""
    noun, parts = describe(spec.main, rng)
    template = _pick(rng, _TEMPLATES)
    text = template.format(
        np=noun,
        bg=_pick(rng, BACKGROUND_WORDS[spec.background]),
        **{k: parts[k] for k in ("ger", "fin", "base")},
    )
    used = next(k for k in ("ger", "fin", "base") if "{" + k + "}" in template)
    for obj in spec.objects[1:]:
        other, oparts = describe(obj, rng)
        text += f" and {other} {oparts['ger']}"
    text = _with_articles(text)
    styled = rng.random() < STYLE_SHARE
    if styled:
        text = _style(text, rng, STYLE_PREFIXES, STYLE_SUFFIXES)
    text = _case_and_punctuation(text, rng)
    return text, {
        "colour": parts["colour"],
        "motion": parts[used],
        "style": "yes" if styled else "no",
    }


def caption(spec: av.ClipSpec, rng: np.random.Generator) -> str:
    """A caption of the clip in the broad training vocabulary (see the module's docstring)."""
    return compose(spec, rng)[0]


# ---------------------------------------------------------------------------- the eval's captions

EVAL_WORDS = ("train_colour", "heldout_colour", "heldout_motion", "heldout_motion_style")


def eval_caption(spec: av.ClipSpec, rng: np.random.Generator, words: str) -> str:
    """A caption for `videopoet eval`'s held-out-word rows: the eval's own held-out template
    phrasing (`shapes_av.caption(..., "heldout")`) with one thing changed:

    - train_colour: the colour named by a training name other than the world's own word;
    - heldout_colour: the colour named by a held-out name (`HELD_OUT_COLOURS`);
    - heldout_motion: the motion in a held-out phrasing of this module (`HELD_OUT_MOTIONS`);
    - heldout_motion_style: that same caption (same rng) with held-out style words around it.
    """
    obj = spec.main
    if words == "train_colour":
        others = [n for n in COLOUR_NAMES[obj.colour] if n != obj.colour]
        return av.caption(spec, rng, "heldout", words={obj.colour: others})
    if words == "heldout_colour":
        return av.caption(spec, rng, "heldout", words={obj.colour: HELD_OUT_COLOURS[obj.colour]})
    if words in ("heldout_motion", "heldout_motion_style"):
        style_rng = np.random.default_rng([spec.seed, 3])
        text = av.caption(spec, rng, "heldout", words={obj.motion: HELD_OUT_MOTIONS[obj.motion]})
        if words == "heldout_motion_style":
            text = _style(text, style_rng, HELD_OUT_STYLE_PREFIXES, HELD_OUT_STYLE_SUFFIXES)
        return text
    raise ValueError(f"words must be one of {EVAL_WORDS}, not {words!r}")


def vocabulary_words() -> set[str]:
    """Every word a broad training caption can use (lower case; hyphens and punctuation split)."""
    texts = (
        [n for names in COLOUR_NAMES.values() for n in names] + list(SHADES) + list(ISH.values())
    )
    texts += [p for forms in MOTION_PHRASES.values() for f in forms for p in f]
    for table in (SHAPE_WORDS, SIZE_WORDS, BACKGROUND_WORDS):
        texts += [w for words in table.values() for w in words]
    texts += STYLE_PREFIXES + STYLE_SUFFIXES + _TEMPLATES + _NOUN_PHRASES + ["an"]  # a -> an
    return {w for t in texts for w in words_of(t)}


def words_of(text: str) -> list[str]:
    """The lower-case words of a text, placeholders dropped."""
    text = re.sub(r"\{\w+\}", " ", text.lower())
    return re.findall(r"[a-z0-9]+", text)
