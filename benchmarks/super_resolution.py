"""What the super-resolution stage adds to a video's time, and where that time goes.

    .venv/bin/python benchmarks/super_resolution.py [--model demo] [--repeat 3] [--threads 1]

A model without an SR stage (the shipped demo) is timed with one of the preset named like it
added with random weights, in a temporary copy of its folder: the time does not depend on
the weights. Prints the seconds of a text_to_video request at the LM's size and at the
stage's (best of --repeat, alternated), the increase, and the parts of the stage: one decode
at each size, the stage's sampling at its configured steps and at half of them, one forward.
With --decoder-channels N, also one decode at the larger size by the same tokenizer with its
decoder N channels wide (random weights): what a narrower decoder for that size would save.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.models import _best as best  # noqa: E402
from models.card import resolve_checkpoint  # noqa: E402
from models.pipeline import ModelConfig, load_pipeline  # noqa: E402
from models.spec import Task, TaskSpec  # noqa: E402
from models.super_resolution import SuperResolution, sample  # noqa: E402
from models.train.super_resolution import sr_config_for  # noqa: E402
from models.video_tokenizer import VideoTokenizer  # noqa: E402
from service import machine  # noqa: E402


def with_stage(model: str, folder: Path) -> str:
    """`model` itself if it has an SR stage, else a copy in `folder` with a random one."""
    from safetensors.torch import save_file

    source = resolve_checkpoint(model)
    if source is None:
        raise SystemExit(f"{model}: give a checkpoint folder or a shipped name")
    config = json.loads((source / "config.json").read_text())
    if config.get("super_resolution"):
        return str(source)
    shutil.copytree(source, folder, dirs_exist_ok=True)
    sr = sr_config_for(ModelConfig.from_dict(config), config["name"])
    config["super_resolution"] = sr.to_dict()
    config["card"]["sr_scale"] = sr.scale
    (folder / "config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    stage = SuperResolution(sr)
    stage.init_weights()
    save_file(stage.state_dict(), str(folder / "super_resolution.safetensors"))
    return str(folder)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="demo")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--decoder-channels", type=int, default=0, help="also time a decoder this wide (0: off)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        pipe = load_pipeline(with_stage(args.model, Path(tmp) / "ckpt"))
    small, big = pipe.card.sizes[0], pipe.card.sizes[-1]
    spec = TaskSpec(task=Task.text_to_video, prompt="a red circle moves left", seed=1)
    seconds = {small: [], big: []}
    for _ in range(args.repeat + 1):  # alternated, the first of each a warm-up
        for size in (small, big):
            t0 = time.perf_counter()
            pipe.generate(spec.model_copy(update={"size": size}))
            seconds[size].append(time.perf_counter() - t0)
    at_small, at_big = min(seconds[small][1:]), min(seconds[big][1:])

    sr = pipe.sr
    with torch.inference_mode():
        text, mask = pipe.text_encoder([spec.prompt])
        low = torch.randint(
            0, sr.config.group_size**sr.config.code_groups, (1, *sr.config.low_grid)
        )
        high = sample(sr, low, text, mask, [0], steps=1)
        steps = sr.config.steps
        parts = {
            "decode_small_s": best(lambda: pipe.video_tokenizer.decode(low), args.repeat),
            "decode_big_s": best(lambda: pipe.video_tokenizer.decode(high), args.repeat),
            f"sample_{steps}_steps_s": best(
                lambda: sample(sr, low, text, mask, [0], steps=steps), args.repeat
            ),
            f"sample_{max(1, steps // 2)}_steps_s": best(
                lambda: sample(sr, low, text, mask, [0], steps=max(1, steps // 2)), args.repeat
            ),
        }
        hi = torch.full((1, *sr.config.grid, sr.config.code_groups), sr.mask_id)
        parts["forward_s"] = best(lambda: sr(hi, low, text, mask), args.repeat)
        if args.decoder_channels:
            narrow = VideoTokenizer(
                replace(pipe.video_tokenizer.config, decoder_channels=args.decoder_channels)
            ).eval()
            parts[f"decode_big_{args.decoder_channels}ch_s"] = best(
                lambda: narrow.decode(high), args.repeat
            )
    row = {
        "model": args.model,
        "sizes": [small, big],
        "video_small_s": round(at_small, 3),
        "video_big_s": round(at_big, 3),
        "added": round(at_big / at_small - 1, 3),
        **{k: round(v, 3) for k, v in parts.items()},
        "sr_parameters": sum(p.numel() for p in sr.parameters()),
        "threads": args.threads,
        "machine": machine(),
    }
    print(
        f"{args.model}: text_to_video {at_small:.2f} s at {small}, {at_big:.2f} s at {big} "
        f"(+{row['added']:.0%}); decode {parts['decode_small_s']:.3f} s at {small}, "
        f"{parts['decode_big_s']:.3f} s at {big}; the stage's {steps} steps "
        f"{parts[f'sample_{steps}_steps_s']:.3f} s, one forward {parts['forward_s']:.3f} s"
    )
    print(json.dumps({"benchmark": "super_resolution", **row}))


if __name__ == "__main__":
    main()
