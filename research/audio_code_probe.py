"""Do the audio codes follow the sound or the waveform? Print how many survive a tiny delay.

    python -m research.audio_code_probe [--model demo] [--n 8] [--threads 1]

Each of n Shapes-AV soundtracks is encoded as it is and delayed by 2, 8 and 16 samples
(0.125, 0.5 and 1 ms at 16 kHz: far below what an ear or a video can tell). The table gives the
share of codes, per RVQ level, that stay the same (the first and last 5 frames left out). Codes
that describe the sound (pitch, timbre, loudness) stay; codes that describe the wave's phase
change, and a video cannot tell an LM which of those to write (video_to_audio).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from models import shapes_av as av
from models.pipeline import load_pipeline

DELAYS = (2, 8, 16)  # samples
EDGE = 5  # frames left out at each end (the delay shifts samples in across the edges)


@torch.no_grad()
def probe(model: str = "demo", n: int = 8) -> dict[int, np.ndarray]:
    """{delay in samples: (levels,) share of codes unchanged, over n clips}."""
    tokenizer = load_pipeline(model, device="cpu").audio_tokenizer
    audio = torch.from_numpy(np.stack([av.generate_clip(s, split="train").audio for s in range(n)]))
    codes = tokenizer.encode(audio)[..., EDGE:-EDGE]  # (n, levels, frames)
    result = {}
    for delay in DELAYS:
        moved = tokenizer.encode(torch.roll(audio, delay, dims=1))[..., EDGE:-EDGE]
        result[delay] = (codes == moved).float().mean((0, 2)).numpy()
    return result


def main(argv: list[str] | None = None) -> dict[int, np.ndarray]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="demo", help="checkpoint name or folder")
    p.add_argument("--n", type=int, default=8, help="soundtracks")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = probe(args.model, args.n)
    levels = len(next(iter(result.values())))
    print(f"audio codes unchanged by a delay ({args.model}, {args.n} soundtracks)")
    print("| delay | " + " | ".join(f"level {k + 1}" for k in range(levels)) + " |")
    print("|---" * (levels + 1) + "|")
    for delay, same in result.items():
        ms = 1000 * delay / av.SAMPLE_RATE
        print(
            f"| {delay} samples ({ms:.3g} ms) | "
            + " | ".join(f"{100 * v:.0f} %" for v in same)
            + " |"
        )
    return result


if __name__ == "__main__":
    main()
