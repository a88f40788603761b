"""Does a checkpoint's SR stage draw the shape its text names, or the outline it is given?

    python -m research.sr_text_probe --model out/sr5 [--n 24] [--guidance G] [--threads 2]

The eval's held-out clips (the same specs as `videopoet eval`) at the card's size, blurred as
`train sr --low-degrade` blurs them (`--sharp`: as they are), go through the checkpoint's SR
stage twice: with their own caption, and with the caption of the same clip whose main object
has another shape. The eval's shape reader then reads the output at the larger size:
`own_caption` is the share that reads as the clip's shape, `swapped_follows_text` the share of
swapped runs that reads as the swapped caption's shape, `swapped_follows_pixels` the share that
still reads as the clip's. A stage that takes the shape from the text scores high on the first
two; one that copies the outline it is given (or rounds every outline alike) scores the share
of clips whose shape its one reading happens to match.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from models import shapes_av as av
from models.conditioning import resize_frames
from models.evaluate import _acc, _Timings, classify_shape


def swapped_spec(spec: av.ClipSpec, k: int) -> av.ClipSpec:
    """`spec` with its main object's shape moved k (1 or 2) places along av.SHAPES."""
    main = spec.main
    other = av.SHAPES[(av.SHAPES.index(main.shape) + k) % len(av.SHAPES)]
    return dataclasses.replace(
        spec, objects=(dataclasses.replace(main, shape=other), *spec.objects[1:])
    )


def probe(pipe, n: int, seed: int = 0, blur: bool = True) -> dict:
    """The three shares (see the module's text) on n held-out clips through `pipe.upscale`."""
    from models.train.super_resolution import degrade

    specs = av.heldout_specs(n, seed=12345 + seed)
    own, swapped, truth, wanted = [], [], [], []
    for i, spec in enumerate(specs):
        clip = av.make_clip(spec, phrasing="heldout")
        frames = resize_frames(clip.frames, pipe.card.height, pipe.card.width)
        frames = degrade(frames) if blur else frames
        other = swapped_spec(spec, 1 + i % 2)
        caption = av.make_clip(other, phrasing="heldout").caption
        own.append(classify_shape(pipe.upscale(frames, clip.caption, i, _Timings())))
        swapped.append(classify_shape(pipe.upscale(frames, caption, i, _Timings())))
        truth.append(spec.main.shape)
        wanted.append(other.main.shape)
    return {
        "n": n,
        "input": "blurred" if blur else "sharp",
        "own_caption": round(_acc(own, truth), 3),
        "swapped_follows_text": round(_acc(swapped, wanted), 3),
        "swapped_follows_pixels": round(_acc(swapped, truth), 3),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="demo", help="checkpoint name or folder with an SR stage")
    p.add_argument("--n", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sharp", action="store_true", help="the clips as they are, not blurred")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="the stage's classifier-free guidance scale (default: its config's)",
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from models.pipeline import load_pipeline

    pipe = load_pipeline(args.model)
    if pipe.sr is None:
        p.error(f"{args.model} has no SR stage: give a folder that `videopoet train sr` wrote")
    if args.guidance is not None:
        pipe.sr.config.guidance = args.guidance
    t0 = time.perf_counter()
    result = probe(pipe, args.n, args.seed, blur=not args.sharp)
    result["guidance"] = pipe.sr.config.guidance
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
