"""Model-stack speed on this machine: LM sampling tokens/s and prefill time, tokenizer
encode/decode frames/s (video) and seconds of audio per second, peak memory.

    .venv/bin/python benchmarks/models.py [--models tiny demo] [--device cpu]

Each model runs in its own subprocess so its peak RSS is its own. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _best(fn, repeat: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(name: str, device: str) -> dict:
    import numpy as np
    import torch

    from models.generate import SamplingParams, generate_tokens, prefill
    from models.pipeline import load_pipeline
    from models.spec import Task
    from models.vocab import assemble

    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    pipe = load_pipeline(name, device=device)
    load_s = time.perf_counter() - t0
    card, lm, vocab = pipe.card, pipe.lm, pipe.vocab
    layout = pipe.layouts[Task.text_to_video]
    text = torch.zeros(1, pipe.config.text_tokens, 384)
    mask = torch.ones(1, pipe.config.text_tokens, dtype=torch.bool)
    batch = assemble(layout, vocab, text=text, text_mask=mask)
    new_tokens = layout.length - layout.prefix_len
    params = SamplingParams.for_rows([0], [1.0], [None], [None], [1.0], device=device)

    def sample():
        generate_tokens(lm, vocab, batch, params)

    sample_s = _best(sample, repeat=2)
    P = layout.prefix_len
    lm.setup_caches(1, layout.length)
    valid = torch.zeros(1, lm.max_seq_len, dtype=torch.bool, device=device)
    valid[:, : layout.length] = True
    x = lm.embed(batch.ids[:, :P].to(device), text.to(device), layout.text_slice)
    caption = lm.caption_vector(text.to(device), mask.to(device))
    grid = lm.layout_grid(layout, device)
    prefill_s = _best(lambda: prefill(lm, x, valid, P, caption, grid))

    frames = np.random.RandomState(0).randint(
        0, 255, (card.clip_frames, card.height, card.width, 3), np.uint8
    )
    clip = pipe.video_tokenizer.frames_to_tensor(frames).to(device)
    encode_s = _best(lambda: pipe.video_tokenizer.encode(clip))
    tokens = pipe.video_tokenizer.encode(clip)
    decode_s = _best(lambda: pipe.video_tokenizer.decode(tokens))
    audio = torch.randn(1, round(card.clip_seconds * card.sample_rate), device=device) * 0.1
    a_encode_s = _best(lambda: pipe.audio_tokenizer.encode(audio))
    codes = pipe.audio_tokenizer.encode(audio)
    a_decode_s = _best(lambda: pipe.audio_tokenizer.decode(codes))
    return {
        "model": name,
        "device": device,
        "threads": torch.get_num_threads(),
        "load_s": round(load_s, 3),
        "lm_params": lm.num_params(),
        "new_tokens": new_tokens,
        "prefix_tokens": P,
        "lm_tokens_per_s": round(new_tokens / sample_s, 1),
        "prefill_s": round(prefill_s, 4),
        "video_encode_frames_per_s": round(card.clip_frames / encode_s, 1),
        "video_decode_frames_per_s": round(card.clip_frames / decode_s, 1),
        "audio_encode_x_realtime": round(card.clip_seconds / a_encode_s, 1),
        "audio_decode_x_realtime": round(card.clip_seconds / a_decode_s, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["tiny", "demo"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.device)))
        return
    rows = []
    for name in args.models:
        out = subprocess.run(
            [sys.executable, __file__, "--one", name, "--device", args.device],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=1800,
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"{name:>6}: LM {row['lm_tokens_per_s']:>8} tok/s ({row['new_tokens']} new after a "
            f"{row['prefix_tokens']}-token prefix), prefill {row['prefill_s'] * 1000:.1f} ms, "
            f"video encode {row['video_encode_frames_per_s']} fr/s, decode "
            f"{row['video_decode_frames_per_s']} fr/s, audio encode {row['audio_encode_x_realtime']}x "
            f"decode {row['audio_decode_x_realtime']}x real time, peak RSS {row['peak_rss_mb']} MB"
        )
    print(json.dumps({"benchmark": "models", "results": rows}))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
