"""Long videos: time by length, and what carrying the decoder's state between passes saves.

    .venv/bin/python benchmarks/long_video.py [--model demo] [--seconds 4,8,16,32] [--threads 1]

A long video is its first clip, then one pass per `step_frames` (a second), each conditioned on
the video's last `context_frames`. For each length, one text_to_video request made two ways,
alternated, on the same seed: `carry_decoder` on (each pass after a row's first decodes only
its new latent frames, on the decoder state the row carries) and off (each pass decodes its
context frames again, as before the carry). Prints the seconds of each, split into sampling,
detokenize and the rest (tokenizing the context, text), and the ratio; and, for each video, how
much the picture jumps where one pass meets the next against between frames of one pass (mean
absolute difference of consecutive frames, uint8 levels): a seam either way makes shows as a
larger jump there. The last line is JSON.
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

from models.pipeline import load_pipeline  # noqa: E402
from models.spec import Task, TaskSpec  # noqa: E402
from service import machine  # noqa: E402

PROMPT = "a red circle moves right on a dark background"


def jumps(frames: np.ndarray, first_clip: int, step: int) -> dict[str, float]:
    """Mean |frame i - frame i-1| at the frames that start a pass, and at every other frame."""
    steps = np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))  # i-1 -> i
    starts = {i - 1 for i in range(first_clip, len(frames), step)}
    seam = [float(d) for i, d in enumerate(steps) if i in starts]
    within = [float(d) for i, d in enumerate(steps) if i not in starts]
    return {
        "pass_start": round(float(np.mean(seam)), 2) if seam else float("nan"),
        "within_pass": round(float(np.mean(within)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="demo")
    parser.add_argument("--seconds", default="4,8,16,32", help="comma-separated lengths")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lengths = [int(s) for s in args.seconds.split(",")]

    pipeline = load_pipeline(args.model)
    card = pipeline.card
    print(f"model {args.model}; machine {machine()}")
    pipeline.generate(TaskSpec(task=Task.text_to_video, prompt=PROMPT, seed=0))  # warm-up
    rows = {}
    for seconds in lengths:
        spec = TaskSpec(task=Task.text_to_video, prompt=PROMPT, seconds=seconds, seed=args.seed)
        figures = {}
        for carry in (True, False):
            pipeline.carry_decoder = carry
            t0 = time.perf_counter()
            result = pipeline.generate(spec)
            total = time.perf_counter() - t0
            sampling = result.timings.get("sampling", 0.0)
            detokenize = result.timings.get("detokenize", 0.0)
            figures["carried" if carry else "context_again"] = {
                "seconds": round(total, 2),
                "sampling": round(sampling, 2),
                "detokenize": round(detokenize, 2),
                "other": round(total - sampling - detokenize, 2),
                "frames": len(result.frames),
                "frame_jump": jumps(result.frames, card.clip_frames, card.step_frames),
            }
        pipeline.carry_decoder = True
        ratio = figures["carried"]["seconds"] / figures["context_again"]["seconds"]
        rows[seconds] = {**figures, "ratio": round(ratio, 2)}
        print(f"{seconds} s: {rows[seconds]}")
    print(
        json.dumps(
            {
                "benchmark": "long_video",
                "model": args.model,
                "threads": args.threads,
                "lengths": rows,
                "machine": machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
