"""The demo on one GPU: the two tokenizers and the LM trained far beyond the CPU checkpoint in
a few minutes, then evaluated, all in one folder that can be copied back.

    python -m models.train.recipe --out out/demo-gpu [--minutes 10]     # make demo-gpu
    python -m models.train.recipe --out /tmp/r --smoke                  # CPU, tiny, seconds

Resumable: run it again on the same --out to go on (each stage resumes, and the cosine follows
the new minutes). The folder ends with config.json and the three .safetensors (a checkpoint
that `VIDEOPOET_MODEL=DIR` serves), train/ (each stage's JSONL log and state), eval.json
(`videopoet eval`'s rows) and recipe.json (the levers, the commands and their wall times).

The levers, each named in the training log as what would reach a target the CPU run missed
(docs/training_log.md, "Where the targets stand"), sized for the minutes of one GPU:

- video tokenizer: 14 bits per token (2**14 codes, from 10) and 4x the encoder's width at
  full resolution (32 x (1, 2, 4), from 9 x (2, 4, 8)) with a wider decoder (48), two residual
  blocks a level, batch 16 clips and 64 frames: shape and PSNR are held back by a decoder that
  draws blobs from codes that hold the shape. 8x8 patches stay (4x4 patches would make every
  LM sequence 4x longer, and the LM must train in the same minutes).
- audio tokenizer: the spectrum encoder with the harmonic source (16 harmonics), which keeps
  every timbre whatever the phase (video_to_audio timbre was held back by the wave encoder).
- LM: 512 x 8 layers (45M parameters with its 17,664-token vocabulary, from 256 x 4, ~5M) with the caption path's pooled
  heads (`text_pool_heads` 4: a probe reads 89 % of held-out phrasings' motion through them),
  batch 64 on 4,000 tokenized clips (400 per minute of --minutes), `--changed-weight 3`.
- many more steps: each stage trains for its share of --minutes at GPU batch sizes (the CPU
  run made about 10,000 steps of batch 4 to 8 per stage in hours).

Not a lever here yet: the broad caption vocabulary (`train lm --captions broad`, the
text-fidelity issue's) waits for its own fine-tune's eval; the captions are the eight templates.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

from models.audio_tokenizer import AudioTokenizerConfig
from models.lm import LM_PRESETS, LMConfig
from models.pipeline import ModelConfig
from models.train.errors import TrainingError
from models.video_tokenizer import PRESETS as VIDEO_PRESETS
from models.video_tokenizer import VideoTokenizerConfig

log = logging.getLogger(__name__)

# Shares of --minutes: the two tokenizers train side by side, then the LM, then the eval (not
# bounded: about a minute on a GPU, a guess). The rest is for the LM's tokenizing of its clips
# (about 30 ms a clip of CPU time: drawing it and its stylize control) and starting processes.
SHARES = {"tokenizers": 0.3, "lm": 0.35, "eval": 0.1}
CLIPS_PER_MINUTE = 400  # the LM's clips per minute of --minutes: 4,000 in 10 (2 min tokenizing)

# Per size: the config's changes (the levers) and each stage's flags.
SIZES = {
    "gpu": {
        "preset": "demo",
        "video_config": {
            "channels": 32,
            "channel_mult": (1, 2, 4),
            "num_res_blocks": 2,
            "codebook_bits": 14,
            "decoder_channels": 48,
            "decoder_channel_mult": (1, 2, 4),
        },
        "audio_config": {"encoder_input": "spectrum", "harmonics": 16},
        "lm_config": {"dim": 512, "n_layers": 8, "n_heads": 8, "text_pool_heads": 4},
        "video-tokenizer": [
            "--batch",
            "16",
            "--image-batch",
            "64",
            "--foreground-weight",
            "10",
            "--foreground-margin",
            "2",
            "--chroma-weight",
            "1",
            "--entropy-tokens",
            "foreground",
            "--lr",
            "1e-3",
            "--steps",
            "200000",
        ],  # fmt: skip
        "audio-tokenizer": [
            "--batch",
            "32",
            "--crop-seconds",
            "0.5",
            "--lr",
            "1e-3",
            "--steps",
            "200000",
        ],  # fmt: skip
        "lm": [
            "--batch",
            "64",
            "--lr",
            "1e-3",
            "--changed-weight",
            "3",
            "--steps",
            "200000",
        ],  # fmt: skip
        "eval": ["--n", "24", "--guidance", "2"],
    },
    # --smoke: the same code paths at the tiny size, on the CPU, in seconds
    "smoke": {
        "preset": "tiny",
        "video_config": {"channels": 16, "codebook_bits": 9},
        "audio_config": {"encoder_input": "spectrum", "harmonics": 4},
        "lm_config": {
            "dim": 64,
            "n_layers": 2,
            "n_heads": 4,
            "text_global": True,
            "text_pool_heads": 2,
        },
        "video-tokenizer": [
            "--batch",
            "2",
            "--image-batch",
            "4",
            "--foreground-weight",
            "10",
            "--foreground-margin",
            "2",
            "--steps",
            "2",
            "--threads",
            "1",
        ],  # fmt: skip
        "audio-tokenizer": ["--batch", "2", "--steps", "2", "--threads", "1"],
        "lm": ["--batch", "2", "--changed-weight", "3", "--steps", "2", "--threads", "1"],
        "eval": ["--n", "1", "--tasks", "tokenizers,text_to_video", "--threads", "1"],
    },
}


def recipe_config(size: str) -> ModelConfig:
    """The preset with the size's levers: a new folder's config.json."""
    s = SIZES[size]
    config = ModelConfig.from_name(s["preset"])
    video_preset = "demo" if s["preset"] == "demo" else "tiny"
    config.video = VideoTokenizerConfig(**{**VIDEO_PRESETS[video_preset], **s["video_config"]})
    config.audio = AudioTokenizerConfig(**{**config.audio.to_dict(), **s["audio_config"]})
    config.lm = LMConfig(**{**LM_PRESETS[s["preset"]], **s["lm_config"]})
    return config.with_derived_lm()


def write_config(out: Path, size: str) -> None:
    """config.json with the levers, unless the folder has one (a run to resume)."""
    path = out / "config.json"
    if path.is_file():
        log.info("%s exists: resuming with its config", path)
        return
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(recipe_config(size).to_dict(), indent=2) + "\n")


def stage_command(
    stage: str, out: Path, size: str, minutes: float, device: str, *extra: str
) -> list[str]:
    return [sys.executable, "-m", "models.train", stage, "--out", str(out), "--resume",
            "--config", SIZES[size]["preset"],
            "--device", device, "--max-minutes", f"{minutes:.3f}", "--checkpoint-minutes", "1",
            *SIZES[size][stage], *extra]  # fmt: skip


def run(commands: list[list[str]], out: Path, record: dict, name: str) -> None:
    """Run the commands side by side, their output into out/train/recipe-<stage>.log; raise if
    one fails, naming its log."""
    t0 = time.perf_counter()
    procs = []
    for cmd in commands:
        stage = cmd[3] if cmd[2] == "models.train" else "eval"
        log_path = out / "train" / f"recipe-{stage}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        f = log_path.open("a")
        log.info("%s (output: %s)", " ".join(cmd[1:]), log_path)
        procs.append((subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT), f, log_path, cmd))
    failed = []
    for proc, f, log_path, cmd in procs:
        code = proc.wait()
        f.close()
        if code:
            failed.append(f"`{' '.join(cmd[1:])}` exited {code} (see {log_path})")
    record["steps"].append(
        {
            "name": name,
            "commands": [" ".join(c[1:]) for c in commands],
            "seconds": round(time.perf_counter() - t0, 1),
        }  # fmt: skip
    )
    if failed:
        raise TrainingError("; ".join(failed))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        prog="python -m models.train.recipe",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="out/demo-gpu", help="the folder (resumable)")
    p.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget, all stages")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cuda or cpu")
    p.add_argument(
        "--clips",
        type=int,
        default=0,
        help=f"clips the LM trains on (default: {CLIPS_PER_MINUTE} per minute of --minutes; "
        "a rerun with more tokenizes only the new ones)",
    )
    p.add_argument(
        "--smoke", action="store_true", help="the same steps on the CPU at the tiny size"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    size = "smoke" if args.smoke else "gpu"
    device = "cpu" if args.smoke else args.device
    out = Path(args.out)
    t0 = time.perf_counter()
    record: dict = {"size": size, "minutes": args.minutes, "device": device, "steps": []}
    try:
        write_config(out, size)
        record["config"] = json.loads((out / "config.json").read_text())
        tok_minutes = args.minutes * SHARES["tokenizers"]
        run([stage_command(s, out, size, tok_minutes, device)
             for s in ("video-tokenizer", "audio-tokenizer")], out, record, "tokenizers")  # fmt: skip
        clips = args.clips or (4 if args.smoke else round(args.minutes * CLIPS_PER_MINUTE))
        lm_minutes = args.minutes * SHARES["lm"]
        lm = stage_command("lm", out, size, lm_minutes, device, "--clips", str(clips))
        run([lm], out, record, "lm")
        evaluate = [sys.executable, "-m", "models.evaluate", "--model", str(out),
                    "--device", device, "--json", str(out / "eval.json"), *SIZES[size]["eval"]]  # fmt: skip
        run([evaluate], out, record, "eval")
    except TrainingError as exc:
        raise SystemExit(f"{p.prog}: error: {exc}") from None
    finally:
        record["seconds"] = round(time.perf_counter() - t0, 1)
        if out.is_dir():
            (out / "recipe.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"checkpoint and eval in {out} ({record['seconds']} s): copy the folder back")
    return record


if __name__ == "__main__":
    main()
