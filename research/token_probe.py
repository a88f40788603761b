"""Which attributes can be read off the tokens themselves? Print a linear probe's accuracy.

    python -m research.token_probe [--model demo] [--n 600] [--threads 1]

n Shapes-AV training clips are tokenized with the checkpoint's tokenizers: the first frame
(an image: its latent frame 0) by the video tokenizer, the soundtrack by the audio tokenizer.
Each is turned into a bag of codes (how often each code occurs; the audio's levels apart),
and a logistic regression fitted on 80 % of the clips predicts an attribute of the other 20 %:
colour, shape, size and background from the picture's codes, timbre (set by the shape) and
loudness (set by the size) from the sound's.

What the tokens do not hold, no LM can write or read: a generated picture cannot show it, and
video_to_audio cannot hear it in a video. A low figure here points at the tokenizer, not the
LM. A bag of codes drops where each code is; that keeps the probe small and is enough for
colour, size and background. Shape is in the arrangement: `--grid` adds a small CNN probe on
the grid of code bits (what the decoder reads: the image's h x w places, one +-1 per bit),
which reads the shape a bag cannot. (Motion is not probed.)

    python -m research.token_probe --model demo --n 3000 --grid    # ~5 min on 2 CPU threads
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from models import shapes_av as av
from models.conditioning import resize_frames
from models.evaluate import tokenizers_only
from models.video_tokenizer import VideoTokenizer

# attribute -> the tokens it is read from
ATTRIBUTES = {
    "colour": "video",
    "shape": "video",
    "size": "video",
    "background": "video",
    "timbre": "audio",
    "size (loudness)": "audio",
}


def bags(codes: torch.Tensor, size: int) -> torch.Tensor:
    """(n, ...) integer codes in [0, size) -> (n, size): the share of each code per row."""
    flat = codes.reshape(len(codes), -1).long()
    counts = torch.zeros(len(codes), size).scatter_add_(
        1, flat, torch.ones_like(flat, dtype=torch.float)
    )
    return counts / flat.shape[1]


def probe_accuracy(
    x: torch.Tensor, labels: list[str], train_share: float = 0.8, steps: int = 300
) -> float:
    """Fit a logistic regression on the first rows, return its accuracy on the rest."""
    names = sorted(set(labels))
    y = torch.tensor([names.index(v) for v in labels])
    cut = int(train_share * len(y))
    x = (x - x[:cut].mean(0)) / (x[:cut].std(0) + 1e-6)
    w = torch.zeros(x.shape[1], len(names), requires_grad=True)
    b = torch.zeros(len(names), requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.05)
    with torch.enable_grad():  # callers may run under no_grad
        for _ in range(steps):
            loss = (
                torch.nn.functional.cross_entropy(x[:cut] @ w + b, y[:cut]) + 1e-3 * w.pow(2).sum()
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return float(((x[cut:] @ w + b).argmax(1) == y[cut:]).float().mean())


def grid_probe_accuracy(
    x: torch.Tensor, labels: list[str], train_share: float = 0.8, epochs: int = 40, width: int = 64
) -> float:
    """Fit a small CNN (three 3x3 convolutions, a max over places, a linear layer) on the first
    rows of x (n, C, h, w), return its accuracy on the rest. Unlike a bag, it sees where each
    code is relative to its neighbours, and the max over places ignores where the object is."""
    names = sorted(set(labels))
    y = torch.tensor([names.index(v) for v in labels])
    cut = int(train_share * len(y))
    g = torch.Generator().manual_seed(0)
    layers: list[torch.nn.Module] = []
    for c_in in (x.shape[1], width, width):
        layers += [torch.nn.Conv2d(c_in, width, 3, padding=1), torch.nn.GELU()]
    net = torch.nn.Sequential(*layers)
    head = torch.nn.Linear(width, len(names))
    for m in (*net, head):
        if hasattr(m, "weight"):
            torch.nn.init.normal_(m.weight, std=(2.0 / m.weight[0].numel()) ** 0.5, generator=g)
            torch.nn.init.zeros_(m.bias)
    opt = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=2e-3)
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(cut, generator=g)
            for i in range(0, cut, 64):
                b = order[i : i + 64]
                loss = torch.nn.functional.cross_entropy(head(net(x[b]).amax(dim=(2, 3))), y[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
    with torch.no_grad():
        return float((head(net(x[cut:]).amax(dim=(2, 3))).argmax(1) == y[cut:]).float().mean())


@torch.no_grad()
def probe(model: str = "demo", n: int = 600, grid: bool = False) -> dict[str, tuple[float, float]]:
    """{attribute: (probe accuracy on held-back clips, chance: the commonest value's share)}."""
    pipe = tokenizers_only(model, "cpu")  # a folder without an LM (yet) will do
    card = pipe.card
    clips = [av.generate_clip(seed, split="train") for seed in range(n)]
    video, audio = [], []
    for i in range(0, n, 32):
        part = clips[i : i + 32]
        first = np.stack([resize_frames(c.frames[:1], card.height, card.width) for c in part])
        video.append(pipe.video_tokenizer.encode(VideoTokenizer.frames_to_tensor(first)))
        sound = torch.from_numpy(np.stack([c.audio for c in part]))
        audio.append(pipe.audio_tokenizer.encode(sound))
    v, a = torch.cat(video), torch.cat(audio)  # (n, 1, h, w), (n, levels, frames)
    features = {
        "video": bags(v, pipe.video_tokenizer.config.codebook_size),
        "audio": torch.cat(
            [bags(a[:, k], pipe.audio_tokenizer.config.codebook_size) for k in range(a.shape[1])],
            dim=1,
        ),
    }
    if grid:  # what the decoder reads: (n, bits, h, w), entries +-1
        bits = pipe.video_tokenizer.tokens_to_codes(v.long()).float()[:, :, 0]
    result, grid_rows = {}, {}
    for attribute, source in ATTRIBUTES.items():
        labels = [c.labels[attribute.split(" ")[0]] for c in clips]
        chance = max(labels.count(v) for v in set(labels)) / len(labels)
        result[attribute] = (probe_accuracy(features[source], labels), chance)
        if grid and source == "video":
            grid_rows[f"{attribute} (grid)"] = (grid_probe_accuracy(bits, labels), chance)
    result.update(grid_rows)  # after the bag rows
    return result


def main(argv: list[str] | None = None) -> dict[str, tuple[float, float]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="demo", help="checkpoint name or folder")
    p.add_argument("--n", type=int, default=600, help="clips (80 %% fit, 20 %% scored)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--grid",
        action="store_true",
        help="also a CNN probe on the video tokens' grid of code bits (needs n in the thousands)",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    result = probe(args.model, args.n, grid=args.grid)
    print(
        f"attributes read off the tokens ({args.model}, {args.n} clips): a linear probe on "
        "bags of codes" + (", a CNN on the grid of code bits" if args.grid else "")
    )
    print("| attribute | tokens | probe accuracy | chance |")
    print("|---|---|---|---|")
    for attribute, (accuracy, chance) in result.items():
        source = ATTRIBUTES.get(attribute, "video, grid")
        print(f"| {attribute} | {source} | {100 * accuracy:.0f} % | {100 * chance:.0f} % |")
    return result


if __name__ == "__main__":
    main()
