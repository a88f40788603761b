"""What do the frozen text encoder's states hold of words no caption trained on: colour names,
motion phrasings, style words? (issue #34; no LM)

    python -m research.vocab_probe [--train 2000] [--heldout 300] [--threads 1]

Readers of the frozen states are fitted on training captions and scored on captions whose
colour name, motion phrasing or style words no training caption uses (`models.captions`'s
held-out lists, in `videopoet eval`'s held-out-word captions over held-out combinations). The
colour readers:

- word alone: the colour name encoded by itself (the mean of its token states), fitted on the
  training names' hues (`models.captions.COLOUR_NAMES`) and scored on the held-out names; and
  with no fitting at all, the nearest of the six world words by cosine ("nearest word");
- word in caption: the mean of the colour phrase's own token states inside the caption (where
  the phrase is, is given);
- token reader: a linear map of every token state to a hue or "none", fitted on where the
  colour phrases are; a caption's colour is the hue that some token reads most surely (where
  the phrase is, is not given: a reader the LM could be);
- mean: a linear map of the mean of the caption's token states (what the LM's `text_global`
  reads);
- attention x4: four learnt queries over the token states (`text_pool_heads: 4`).

Motion: mean and attention x4 (as `research.caption_probe`), each fitted on template captions
(what the shipped LM trained on) and on broad ones, scored on the eval's held-out phrasings, on
this module's held-out phrasings, and on those with held-out style words added. Prints accuracies
(chance 17 %: six hues, six motions). About a minute on one CPU thread.
"""

from __future__ import annotations

import argparse
import re

import numpy as np
import torch
import torch.nn.functional as F

from models import captions as cap
from models import shapes_av as av
from models.text_encoder import load_text_encoder
from research.caption_probe import Attention, Mean, encode, fit

HUES = list(av.COLOURS)


def spans(encoder, texts: list[str], phrases: list[str], length: int) -> torch.Tensor:
    """(N, length) bool: the tokens of each text that lie in its phrase's first whole-word
    occurrence (case ignored)."""
    out = torch.zeros(len(texts), length, dtype=torch.bool)
    for i, (text, phrase) in enumerate(zip(texts, phrases)):
        m = re.search(rf"\b{re.escape(phrase.lower())}\b", text.lower())
        if m is None:
            raise ValueError(f"{phrase!r} is not in {text!r}")
        for j, (a, b) in enumerate(encoder.tokenizer.encode(text).offsets[:length]):
            if b > a and a < m.end() and b > m.start():
                out[i, j] = True
    return out


def span_mean(s: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    w = where[..., None].float()
    return (s * w).sum(1) / w.sum(1).clamp_min(1)


class Linear(torch.nn.Module):
    def __init__(self, dim: int, classes: int):
        super().__init__()
        self.out = torch.nn.Linear(dim, classes)

    def forward(self, x, _mask=None):
        return self.out(x)


class TokenReader(torch.nn.Module):
    """Each token state -> a hue or "none" (the last class); a caption's hue is the one with
    the largest probability at any token."""

    def __init__(self, dim: int):
        super().__init__()
        self.out = torch.nn.Linear(dim, len(HUES) + 1)

    def forward(self, s, m):
        p = self.out(s).softmax(-1)[..., : len(HUES)]  # (N, L, hues)
        return p.masked_fill(~m[..., None], 0).amax(1)

    def fit(self, s, m, where, y, steps: int = 400) -> None:
        """Per token: the caption's hue on its colour phrase, "none" elsewhere."""
        labels = torch.where(where, y[:, None], len(HUES))[m]
        states = s[m]
        weight = torch.ones(len(HUES) + 1)
        weight[-1] = float((labels < len(HUES)).sum()) / float((labels == len(HUES)).sum())
        opt = torch.optim.Adam(self.parameters(), 3e-3, weight_decay=1e-4)
        gen = torch.Generator().manual_seed(0)
        for _ in range(steps):
            idx = torch.randint(len(labels), (1024,), generator=gen)
            opt.zero_grad()
            F.cross_entropy(self.out(states[idx]), labels[idx], weight=weight).backward()
            opt.step()


def accuracy(reader, s, m, y) -> float:
    with torch.no_grad():
        return float((reader(s, m).argmax(1) == y).float().mean())


def word_alone(encoder, length: int, steps: int = 400) -> dict:
    """Colour names encoded alone: a linear probe fitted on the training names, and the nearest
    world word by cosine, both scored on the held-out names."""

    def states(names):
        s, m = encode(encoder, names, length)
        inner = m.clone()
        inner[:, 0] = False  # [CLS]
        inner[torch.arange(len(names)), m.sum(1) - 1] = False  # [SEP]
        return span_mean(s, inner)

    train = [(n, h) for h in HUES for n in cap.COLOUR_NAMES[h]]
    held = [(n, h) for h in HUES for n in cap.HELD_OUT_COLOURS[h]]
    # a shade before each one-word training name too: more examples of each hue
    train += [(f"{s} {n}", h) for n, h in list(train) if " " not in n for s in cap.SHADES[:4]]
    xt, xh = states([n for n, _ in train]), states([n for n, _ in held])
    yt = torch.tensor([HUES.index(h) for _, h in train])
    yh = torch.tensor([HUES.index(h) for _, h in held])
    torch.manual_seed(0)
    probe = Linear(xt.shape[1], len(HUES))
    fit(probe, xt, None, yt, steps)
    words = F.normalize(states(HUES), dim=1)
    nearest = (F.normalize(xh, dim=1) @ words.T).argmax(1)
    with torch.no_grad():
        fitted = probe(xh).argmax(1)
    return {
        "word alone (fitted)": float((fitted == yh).float().mean()),
        "word alone (nearest word)": float((nearest == yh).float().mean()),
        "names": len(held),
        "read": {
            n: (HUES[int(a)], HUES[int(b)]) for (n, _), a, b in zip(held, fitted, nearest)
        },  # held-out name -> (fitted probe's hue, nearest word)
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", type=int, default=2000, help="training captions per caption style")
    p.add_argument("--heldout", type=int, default=300, help="held-out clips")
    p.add_argument("--steps", type=int, default=400, help="Adam steps per reader")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    encoder = load_text_encoder("minilm")
    length = encoder.max_tokens
    results: dict[str, dict[str, float]] = {}

    alone = word_alone(encoder, length, args.steps)
    print(
        f"colour names alone ({alone['names']} held-out names): fitted on the training names "
        f"{100 * alone['word alone (fitted)']:.0f} %, nearest of the six words "
        f"{100 * alone['word alone (nearest word)']:.0f} % (chance 17 %)"
    )
    results["word alone"] = alone

    # training captions: broad (with where the colour phrase is) and template
    specs = [av.sample_clip_spec(s) for s in range(args.train)]
    broad = [cap.compose(s, np.random.default_rng([s.seed, 1])) for s in specs]
    template = [av.caption(s, np.random.default_rng([s.seed, 1])) for s in specs]
    y_colour = torch.tensor([HUES.index(s.main.colour) for s in specs])
    y_motion = torch.tensor([av.MOTIONS.index(s.main.motion) for s in specs])
    sb, mb = encode(encoder, [t for t, _ in broad], length)
    wb = spans(encoder, [t for t, _ in broad], [c["colour"] for _, c in broad], length)
    st, mt = encode(encoder, template, length)

    # held-out captions: the eval's held-out-word captions over held-out combinations
    held = av.heldout_specs(args.heldout, seed=999)
    hc = torch.tensor([HUES.index(s.main.colour) for s in held])
    hm = torch.tensor([av.MOTIONS.index(s.main.motion) for s in held])
    sets = {}
    for words in cap.EVAL_WORDS:
        texts = [cap.eval_caption(s, np.random.default_rng([s.seed, 1]), words) for s in held]
        sets[words] = (texts, *encode(encoder, texts, length))
    own = [av.caption(s, np.random.default_rng([s.seed, 1]), "heldout") for s in held]
    sets["eval"] = (own, *encode(encoder, own, length))

    def colour_words(words: str) -> list[str]:
        """The colour phrase of each held-out caption (the name eval_caption put in)."""
        names = (
            cap.COLOUR_NAMES if words == "train_colour" else cap.HELD_OUT_COLOURS
        )  # exactly one name of the hue is in the caption
        texts = sets[words][0]
        found = []
        for text, s in zip(texts, held):
            hits = [n for n in names[s.main.colour] if re.search(rf"\b{n}\b", text.lower())]
            found.append(max(hits, key=len))
        return found

    dim = sb.shape[-1]
    colour_rows = {}
    per_name: dict[str, dict[str, list[bool]]] = {}
    for name, make in (
        ("word in caption", lambda: Linear(dim, len(HUES))),
        ("token reader", lambda: TokenReader(dim)),
        ("mean", lambda: Mean(dim, len(HUES))),
        ("attention x4", lambda: Attention(dim, classes=len(HUES))),
    ):
        torch.manual_seed(0)
        reader = make()
        if name == "word in caption":
            fit(reader, span_mean(sb, wb), None, y_colour, args.steps)
        elif name == "token reader":
            reader.fit(sb, mb, wb, y_colour, args.steps)
        else:
            fit(reader, sb, mb, y_colour, args.steps)
        row = {}
        for words, label in (("train_colour", "training names"), ("heldout_colour", "held-out")):
            texts, s, m = sets[words]
            with torch.no_grad():
                if name == "word in caption":
                    where = spans(encoder, texts, colour_words(words), length)
                    got = reader(span_mean(s, where)).argmax(1)
                else:
                    got = reader(s, m).argmax(1)
            row[label] = float((got == hc).float().mean())
            if words == "heldout_colour":  # per held-out name: the share of its captions right
                for n, ok in zip(colour_words(words), (got == hc).tolist()):
                    per_name.setdefault(n, {}).setdefault(name, []).append(ok)
        colour_rows[name] = row
    print("\ncolour read off broad-caption readers, on held-out combinations (chance 17 %):")
    print("| reader | training names | held-out names |")
    print("|---|---|---|")
    for name, row in colour_rows.items():
        print(f"| {name} | {100 * row['training names']:.0f} % | {100 * row['held-out']:.0f} % |")
    results["colour"] = colour_rows
    print("\nper held-out name: read alone (fitted probe / nearest word), in captions (right):")
    print("| name | hue | alone: fitted | alone: nearest | word in caption | token reader |")
    print("|---|---|---|---|---|---|")
    for h in HUES:
        for n in cap.HELD_OUT_COLOURS[h]:
            fitted, nearest = alone["read"][n]
            cells = [
                f"{100 * np.mean(per_name[n][r]):.0f} %" if n in per_name else "-"
                for r in ("word in caption", "token reader")
            ]
            print(f"| {n} | {h} | {fitted} | {nearest} | " + " | ".join(cells) + " |")
    results["per name"] = {
        n: {r: float(np.mean(v)) for r, v in d.items()} for n, d in per_name.items()
    }

    motion_rows = {}
    for trained, (s_tr, m_tr) in (("template", (st, mt)), ("broad", (sb, mb))):
        for name, make in (("mean", Mean), ("attention x4", Attention)):
            torch.manual_seed(0)
            reader = make(dim)
            fit(reader, s_tr, m_tr, y_motion, args.steps)
            motion_rows[f"{name}, {trained} captions"] = {
                label: accuracy(reader, sets[words][1], sets[words][2], hm)
                for words, label in (
                    ("eval", "eval phrasings"),
                    ("heldout_motion", "held-out phrasings"),
                    ("heldout_motion_style", "+ style words"),
                )
            }
    print("\nmotion, on held-out combinations (chance 17 %):")
    print("| reader, fitted on | eval phrasings | held-out phrasings | + style words |")
    print("|---|---|---|---|")
    for name, row in motion_rows.items():
        print(f"| {name} | " + " | ".join(f"{100 * v:.0f} %" for v in row.values()) + " |")
    results["motion"] = motion_rows
    return results


if __name__ == "__main__":
    main()
