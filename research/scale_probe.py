"""What a video tokenizer keeps of clips rendered at a given size: its ceiling at that size.

    python -m research.scale_probe --model demo --size 128 [--n 48] [--threads 2]
    python -m research.scale_probe --model out/vt128 --size 128     # a run's folder, mid-training

The eval's held-out clips (the same specs as `videopoet eval`) are rendered at --size, sent
through the checkpoint's video tokenizer (encode, then decode at that size) and read by the
eval's analysers: colour, shape, size and motion kept, with what the analysers read off the
true render (their own ceiling) and the reconstruction PSNR; and shape read off frame 0 alone
(the causal tokenizer draws it from latent frame 0 only; the eval reads the clip's median).
No SR stage and no LM: the
figure bounds what any stage that writes the tokenizer's codes at that size can show.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from models import shapes_av as av
from models.evaluate import (
    _acc,
    classify_motion,
    classify_shape,
    classify_size,
    dominant_colour,
    psnr,
    round_trip_video,
)

READERS = (
    ("colour", dominant_colour),
    ("shape", classify_shape),
    ("size", classify_size),
    ("motion", classify_motion),
)


def probe(tokenizer, size: int, n: int, seed: int = 0, device: str = "cpu") -> dict:
    """The analysers on n held-out clips at size x size, through the tokenizer and true."""
    specs = av.heldout_specs(n, seed=12345 + seed)
    truths = [av.render_frames(sp, size) for sp in specs]
    labels = [av.labels(sp) for sp in specs]
    outs = [round_trip_video(tokenizer, t, device) for t in truths]
    result: dict = {
        "size": size,
        "n": n,
        "psnr_db": round(float(np.mean([psnr(t, o) for t, o in zip(truths, outs)])), 2),
    }
    for name, fn in READERS:
        want = [lab[name] for lab in labels]
        result[f"{name}_kept"] = round(_acc([fn(o) for o in outs], want), 3)
        result[f"{name}_true"] = round(_acc([fn(t) for t in truths], want), 3)
    # frame 0 alone (the causal tokenizer's latent frame 0, an image's only one) against the
    # clip's median: how much of what is lost is lost in the later, 4-frame latent frames
    shapes = [lab["shape"] for lab in labels]
    result["shape_frame0_kept"] = round(_acc([classify_shape(o[:1]) for o in outs], shapes), 3)
    return result


def load_video_tokenizer(model: str):
    """The video tokenizer of a checkpoint folder or shipped name (a run's folder may hold
    nothing else yet)."""
    from models.card import resolve_checkpoint
    from models.pipeline import ModelConfig, load_component, load_pipeline
    from models.video_tokenizer import VideoTokenizer

    folder = resolve_checkpoint(model)
    if folder is None:  # a preset, built from its seed
        return load_pipeline(model).video_tokenizer
    config = ModelConfig.from_dict(json.loads((folder / "config.json").read_text())).video
    return load_component(
        folder, "video_tokenizer", lambda: VideoTokenizer(config), "train the video tokenizer"
    )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="demo", help="checkpoint name or folder (a run's --out)")
    p.add_argument("--size", type=int, default=128, help="render and tokenize at size x size")
    p.add_argument("--n", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = load_video_tokenizer(args.model)
    t0 = time.perf_counter()
    result = probe(tokenizer, args.size, args.n, args.seed)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
