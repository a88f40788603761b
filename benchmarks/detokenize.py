"""Batched video detokenization against row by row, and the cost of a preview.

    .venv/bin/python benchmarks/detokenize.py [--model demo] [--rows 8] [--threads 1]

Tokenizes `--rows` Shapes-AV clips (real codes, as the LM learnt them), then for batches of
2, 4, ... up to --rows: seconds to decode them row by row (`Pipeline.decode_video_tokens` one
row at a time) and in one call (the whole batch), each timing the best of 3 alternated runs so
background load hits both alike; the speed-up; and how far the batched pixels are from the
row-by-row ones (the largest difference in uint8 levels, and how many channel values differ).
Then `Pipeline.decode_video_prefix` for k = 1 .. t latent frames of one row against one full
decode (best of 5), with its largest difference from the full decode's first frames; and
`Pipeline.decode_video_carried`, the causal decoder's state carried from one latent frame to the
next (each frame's own time), with what a video's previews and finish cost either way. The last
line is JSON.
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
from models.shapes_av import generate_clip  # noqa: E402
from models.video_tokenizer import DecoderState, VideoTokenizer  # noqa: E402
from service import machine  # noqa: E402


def _levels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="demo")
    parser.add_argument("--rows", type=int, default=8, choices=range(2, 33), metavar="2..32")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pipeline = load_pipeline(args.model)
    t = pipeline.shapes.t_clip
    frames = pipeline.card.clip_frames
    h, w = pipeline.shapes.latent_hw
    size = (8 * h, 8 * w)
    clips = [generate_clip(seed=i).frames for i in range(args.rows)]
    with torch.inference_mode():
        codes = torch.cat(
            [
                pipeline.video_tokenizer.encode(
                    VideoTokenizer.frames_to_tensor(
                        np.stack([_resize(f, size) for f in c[:frames]])
                    )
                )
                for c in clips
            ]
        ).flatten(1)
    print(f"model {args.model}, {args.rows} rows of {t}x{h}x{w} codes; machine {machine()}")

    def rows(c: torch.Tensor) -> np.ndarray:
        return np.concatenate(
            [pipeline.decode_video_tokens(c[k : k + 1], t) for k in range(len(c))]
        )

    rows(codes[:1])  # warm-up
    pipeline.decode_video_tokens(codes[:2], t)
    batches = {}
    b = 2
    while b <= args.rows:
        c, alone, together = codes[:b], float("inf"), float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            r = rows(c)
            alone = min(alone, time.perf_counter() - t0)
            t0 = time.perf_counter()
            bb = pipeline.decode_video_tokens(c, t)
            together = min(together, time.perf_counter() - t0)
        d = _levels(r, bb)
        batches[b] = {
            "row_by_row_s": round(alone, 3),
            "batched_s": round(together, 3),
            "speedup": round(alone / together, 2),
            "max_level_difference": int(d.max()),
            "values_differing": int((d > 0).sum()),
            "values": int(d.size),
        }
        print(f"batch {b}: {batches[b]}")
        b *= 2

    full = pipeline.decode_video_tokens(codes[:1], t)[0]
    best = dict.fromkeys(range(1, t + 2), float("inf"))
    diff = {}
    for _ in range(5):
        for k in best:
            t0 = time.perf_counter()
            out = (
                pipeline.decode_video_tokens(codes[:1], t)[0]
                if k == t + 1
                else pipeline.decode_video_prefix(codes[0], k)
            )
            best[k] = min(best[k], time.perf_counter() - t0)
            diff[k] = int(_levels(out, full[: len(out)]).max())
    full_s = best.pop(t + 1)
    prefixes = {
        k: {
            "frames": 4 * (k - 1) + 1,
            "seconds": round(s, 3),
            "of_full": round(s / full_s, 2),
            "max_level_difference": diff[k],
        }
        for k, s in best.items()
    }
    print(f"one full decode {full_s:.3f} s; prefixes: {prefixes}")

    # previews with the decoder's state carried: each latent frame decoded once, the finish
    # going on from the last preview (`Pipeline.decode_video_carried`)
    step = dict.fromkeys(range(1, t + 1), float("inf"))
    carried_diff = 0
    for _ in range(5):
        state, parts = DecoderState(), []
        for k in step:
            t0 = time.perf_counter()
            parts.append(pipeline.decode_video_carried(codes[0], k, state))
            step[k] = min(step[k], time.perf_counter() - t0)
        carried_diff = max(carried_diff, int(_levels(np.concatenate(parts), full).max()))
    carried = {k: round(s, 3) for k, s in step.items()}
    # a video with a preview at each latent frame but the last, then its finish
    before = sum(best[k] for k in range(1, t)) + full_s
    after = sum(step.values())
    print(
        f"carried, latent frame by latent frame: {carried} (largest difference from the full "
        f"decode {carried_diff}); a video's {t - 1} previews and its finish: prefixes decoded "
        f"again {before:.3f} s, carried {after:.3f} s"
    )
    print(
        json.dumps(
            {
                "benchmark": "detokenize",
                "model": args.model,
                "threads": args.threads,
                "batches": batches,
                "full_decode_s": round(full_s, 3),
                "prefixes": prefixes,
                "carried_steps_s": carried,
                "carried_max_level_difference": carried_diff,
                "previews_and_finish_s": {
                    "prefixes_again": round(before, 3),
                    "carried": round(after, 3),
                },
                "machine": machine(),
            }
        )
    )


def _resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if frame.shape[:2] == size:
        return frame
    from models.conditioning import resize_frames

    return resize_frames(frame[None], *size)[0]


if __name__ == "__main__":
    main()
