"""Can a small reader of the frozen text encoder's states tell a caption's motion, when fitted on
training phrasings and asked about held-out ones?

    python -m research.caption_probe [--train 1500] [--heldout 300] [--threads 2]

No LM is involved: this asks what the text encoder's states make easy. Three readers are fitted
on the motion of `--train` training captions (Shapes-AV clips 0 onwards, training phrasings) and
scored on `--heldout` held-out clips captioned in the held-out phrasings (`videopoet eval`'s
words and templates):

- mean: a linear map of the mean of the caption's token states (what `text_global` reads);
- max: a linear map of their per-channel maximum;
- attention x4: four learnt queries, each a softmax over the tokens, their weighted states
  concatenated through a linear map (what `text_pool_heads: 4` adds).

Prints each reader's training and held-out accuracy and its held-out confusion table, prompted
motion (rows) against the motion read (columns). About a minute on two CPU threads.
"""

from __future__ import annotations

import argparse
import collections

import torch
import torch.nn.functional as F

from models import shapes_av as av
from models.text_encoder import load_text_encoder

MOTIONS = list(av.MOTIONS)


def encode(encoder, captions: list[str], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, length, D) token states and (N, length) bool mask, padded to `length`."""
    states, masks = [], []
    for i in range(0, len(captions), 64):
        s, m = encoder(captions[i : i + 64])
        states.append(F.pad(s.float(), (0, 0, 0, length - s.shape[1])))
        masks.append(F.pad(m.bool(), (0, length - m.shape[1])))
    return torch.cat(states), torch.cat(masks)


class Mean(torch.nn.Module):
    def __init__(self, dim: int, classes: int = len(MOTIONS)):
        super().__init__()
        self.out = torch.nn.Linear(dim, classes)

    def forward(self, s, m):
        w = m[..., None].float()
        return self.out((s * w).sum(1) / w.sum(1).clamp_min(1))


class Max(Mean):
    def forward(self, s, m):
        return self.out(s.masked_fill(~m[..., None], -1e4).amax(1))


class Attention(torch.nn.Module):
    def __init__(self, dim: int, heads: int = 4, classes: int = len(MOTIONS)):
        super().__init__()
        self.score = torch.nn.Linear(dim, heads)
        self.out = torch.nn.Linear(heads * dim, classes)

    def forward(self, s, m):
        a = self.score(s).masked_fill(~m[..., None], float("-inf")).softmax(1)  # (N, L, heads)
        return self.out(torch.einsum("nlh,nld->nhd", a, s).flatten(1))


def fit(reader, s, m, y, steps: int = 400) -> None:
    """Adam on the cross-entropy of `reader(s, m)` against y; m may be None (pooled inputs)."""
    opt = torch.optim.Adam(reader.parameters(), 3e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(len(y), (256,), generator=gen)
        opt.zero_grad()
        F.cross_entropy(reader(s[idx], None if m is None else m[idx]), y[idx]).backward()
        opt.step()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", type=int, default=1500)
    p.add_argument("--heldout", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    encoder = load_text_encoder("minilm")
    train = [av.generate_clip(s) for s in range(args.train)]
    held = [av.make_clip(s, phrasing="heldout") for s in av.heldout_specs(args.heldout, seed=999)]
    length = encoder.max_tokens  # the encoder pads every caption to this
    st, mt = encode(encoder, [c.caption for c in train], length)
    sh, mh = encode(encoder, [c.caption for c in held], length)
    yt = torch.tensor([MOTIONS.index(c.labels["motion"]) for c in train])
    yh = torch.tensor([MOTIONS.index(c.labels["motion"]) for c in held])
    dim = st.shape[-1]
    for name, make in (("mean", Mean), ("max", Max), ("attention x4", Attention)):
        torch.manual_seed(0)
        reader = make(dim)
        fit(reader, st, mt, yt)
        with torch.no_grad():
            on_train = (reader(st, mt).argmax(1) == yt).float().mean().item()
            got = reader(sh, mh).argmax(1)
        print(
            f"\n{name}: training phrasings {100 * on_train:.0f} %, held-out phrasings "
            f"{100 * (got == yh).float().mean().item():.0f} %"
        )
        conf = collections.Counter(zip(yh.tolist(), got.tolist()))
        print("prompted \\ read " + " ".join(f"{m[:5]:>5}" for m in MOTIONS))
        for i, m in enumerate(MOTIONS):
            print(f"{m:15s} " + " ".join(f"{conf[(i, j)]:5d}" for j in range(len(MOTIONS))))


if __name__ == "__main__":
    main()
