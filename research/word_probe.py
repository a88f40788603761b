"""Does an LM read the words for each attribute? Print how much its loss rises without them.

    python -m research.word_probe [--model demo] [--n 24] [--threads 1]

For n clips of the Shapes-AV training split, text_to_video's cross-entropy (nats per token) is measured on
each latent frame of the clip's own tokens: with its own caption, then with one attribute's
words swapped for another value's (the colour "red" -> "blue", the shape, the size, the
motion "moving left" -> "moving up"), then with no caption. A model that reads an attribute's
words finds the swapped caption a worse fit, so its loss rises on the frames that attribute
shows in: frame 0 for colour, shape and size, frames 1 and on for motion. A rise of about 0 means the words are ignored.

These clips are ones `train lm` never draws. The last row is the loss with their own captions
on the first n clips it does train on (Shapes-AV seeds 1 to n, `--seed 0`): far below the
first row, the LM has learnt its training clips by heart and need not read their captions.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from models import shapes_av as av
from models.conditioning import fit_length, resize_frames
from models.pipeline import load_pipeline
from models.spec import Task
from models.train import token_losses
from models.video_tokenizer import VideoTokenizer
from models.vocab import Kind, assemble

UNSEEN = 50_000_000  # first seed of the probe's clips: beyond any --clips a run tokenizes
TRAINED_ON = "own caption, clips it trained on"
ATTRIBUTES = {
    "colour": list(av.COLOURS),
    "shape": list(av.SHAPES),
    "size": list(av.SIZES),
    "motion": list(av.MOTIONS),
}


def swap_words(clip: av.Clip, attribute: str, rng: np.random.Generator) -> str:
    """The clip's caption with its `attribute` phrase replaced by another value's."""
    value = clip.labels[attribute]
    other = [v for v in ATTRIBUTES[attribute] if v != value][
        rng.integers(len(ATTRIBUTES[attribute]) - 1)
    ]
    return av.reword(clip.caption, value, other)


@torch.no_grad()
def probe(model: str = "demo", n: int = 24, seed: int = 0) -> dict[str, np.ndarray]:
    """{caption variant: mean cross-entropy per latent frame}; variants: own, each attribute
    swapped, none."""
    pipe = load_pipeline(model, device="cpu")
    layout = pipe.layouts[Task.text_to_video]
    card = pipe.card

    def tokens(seeds) -> tuple[list[av.Clip], torch.Tensor]:
        clips = [av.generate_clip(s, split="train") for s in seeds]
        pixels = np.stack(
            [
                fit_length(resize_frames(c.frames, card.height, card.width), card.clip_frames)
                for c in clips
            ]
        )
        return clips, pipe.video_tokenizer.encode(VideoTokenizer.frames_to_tensor(pixels))

    def losses(video: torch.Tensor, captions: list) -> np.ndarray:
        text, mask = pipe.text_encoder(captions)
        batch = assemble(
            layout,
            pipe.vocab,
            text=text,
            text_mask=mask,
            batch_size=n,
            visual_out=video.long().flatten(1),
        )
        ce = token_losses(pipe.lm, batch, pipe.vocab, pipe.config.text_tokens)[Kind.visual]
        return ce.view(n, video.shape[1], -1).mean((0, 2)).numpy()

    rng = np.random.default_rng(seed)
    clips, video = tokens(range(UNSEEN, UNSEEN + n))
    variants = {"own caption": [c.caption for c in clips]}
    variants |= {f"{a} swapped": [swap_words(c, a, rng) for c in clips] for a in ATTRIBUTES}
    variants["no caption"] = [None] * n
    result = {name: losses(video, captions) for name, captions in variants.items()}
    seen, seen_video = tokens(range(1, 1 + n))  # train lm's first n clips (ShapesAVData, seed 0)
    result[TRAINED_ON] = losses(seen_video, [c.caption for c in seen])
    return result


def main(argv: list[str] | None = None) -> dict[str, np.ndarray]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="demo", help="checkpoint name or folder")
    p.add_argument("--n", type=int, default=24, help="clips per row")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = probe(args.model, args.n)
    own = result["own caption"]
    frames = len(own)
    print(
        f"text_to_video loss, nats per token, by latent frame ({args.model}, {args.n} clips of the "
        "training split that `train lm` never draws; rises against the first row)"
    )
    print("| caption | " + " | ".join(f"frame {t}" for t in range(frames)) + " |")
    print("|---" * (frames + 1) + "|")
    print("| own | " + " | ".join(f"{v:.3f}" for v in own) + " |")
    for name, ce in result.items():
        if name not in ("own caption", TRAINED_ON):
            print(f"| {name} | " + " | ".join(f"{v - o:+.3f}" for v, o in zip(ce, own)) + " |")
    print(f"| {TRAINED_ON} | " + " | ".join(f"{v:.3f}" for v in result[TRAINED_ON]) + " |")
    return result


if __name__ == "__main__":
    main()
