"""What `VIDEOPOET_QUANTIZE=int8` costs in quality and saves in bytes, on a real checkpoint.

    .venv/bin/python benchmarks/quantize.py [--model demo] [--n 24] [--threads 1]

Loads the model twice, float32 and int8 (models/quantize.py), and generates text_to_video for
`--n` held-out Shapes-AV captions with the same seed on both. Reports the LM's weight bytes,
the share of sampled tokens that are identical, the share of videos whose tokens are all
identical, where the first differing token falls (median, as a share of the sampled tokens;
sampling is chaotic: after one differing draw the rest of the row goes its own way, so the
eval rows, not token identity, say whether the videos are still right), the largest pixel
difference, and the seconds of each. The eval rows come from `videopoet eval --quantize
int8`; the speed against HF with the same quantization from `benchmarks/sampling.py
--quantize int8`. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import models.pipeline as pipeline_module  # noqa: E402
from models import shapes_av as av  # noqa: E402
from models.quantize import weight_bytes  # noqa: E402
from models.spec import Task, TaskSpec  # noqa: E402
from service import machine  # noqa: E402


def recorded_generate(pipe, specs: list[TaskSpec]) -> tuple[list[torch.Tensor], list, float]:
    """Generate one spec at a time, keeping the token ids each sampling call returned."""
    calls: list[torch.Tensor] = []
    real = pipeline_module.generate_tokens

    def recording(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(out.clone())
        return out

    pipeline_module.generate_tokens = recording
    try:
        t0 = time.perf_counter()
        results = [pipe.generate(s) for s in specs]
        seconds = time.perf_counter() - t0
    finally:
        pipeline_module.generate_tokens = real
    return calls, results, seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="demo")
    parser.add_argument("--n", type=int, default=24, help="captions (one video each)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    prompts = [av.make_clip(s, phrasing="heldout").caption for s in av.heldout_specs(args.n)]
    specs = [TaskSpec(task=Task.text_to_video, prompt=p, seed=i) for i, p in enumerate(prompts)]
    runs = {}
    for mode in ("none", "int8"):
        pipe = pipeline_module.load_pipeline(args.model, device="cpu", quantize=mode)
        layout = pipe.layouts[Task.text_to_video]
        runs[mode] = (*recorded_generate(pipe, specs), weight_bytes(pipe.lm))
    (ref, ref_res, ref_s, ref_bytes), (q, q_res, q_s, q_bytes) = runs["none"], runs["int8"]

    sampled = layout.prefix_len  # positions before it are the prompt, the same on both
    same, total, identical, first = 0, 0, 0, []
    for a, b in zip(ref, q):
        a, b = a[:, sampled:], b[:, sampled:]
        eq = a == b
        same += int(eq.sum())
        total += eq.numel()
        for row in eq:
            if bool(row.all()):
                identical += 1
                first.append(1.0)
            else:
                first.append(int((~row).nonzero()[0]) / row.numel())
    pixels = max(
        int(np.abs(x.frames.astype(np.int16) - y.frames.astype(np.int16)).max())
        for x, y in zip(ref_res, q_res)
    )
    row = {
        "model": args.model,
        "videos": args.n,
        "lm_weight_bytes_float32": ref_bytes,
        "lm_weight_bytes_int8": q_bytes,
        "bytes_ratio": round(q_bytes / ref_bytes, 3),
        "token_agreement": round(same / total, 4),
        "identical_videos": round(identical / args.n, 3),
        "first_difference_median": round(float(np.median(first)), 3),
        "max_pixel_difference": pixels,
        "seconds_float32": round(ref_s, 2),
        "seconds_int8": round(q_s, 2),
        "threads": args.threads,
        "machine": machine(),
    }
    print(
        f"{args.model}: LM weights {ref_bytes / 2**20:.1f} MiB float32, "
        f"{q_bytes / 2**20:.1f} MiB int8; {row['token_agreement']:.1%} of sampled tokens and "
        f"{row['identical_videos']:.0%} of {args.n} videos identical; first difference at "
        f"{row['first_difference_median']:.0%} of the tokens (median); "
        f"{ref_s:.1f} s float32, {q_s:.1f} s int8"
    )
    print(json.dumps({"benchmark": "quantize", **row}))


if __name__ == "__main__":
    main()
