"""`videopoet train STAGE ...` (or `python -m models.train STAGE ...`): the argument parser, one
subcommand per stage, each listing only its own flags beside the common ones, and
`main_train(argv)`, which turns a `TrainingError` into a one-line error."""

from __future__ import annotations

import argparse
import logging
import textwrap
from collections.abc import Callable, Sequence

import torch

from models import pipeline
from models.train import distributed
from models.train.audio_tokenizer import train_audio_tokenizer
from models.train.data import CAPTION_STYLES
from models.train.errors import TrainingError
from models.train.lm import TASK_WEIGHTS, copy_tokenizers, task_weights, train_lm
from models.train.loop import DEFAULTS, STAGES, init_path
from models.train.super_resolution import train_sr
from models.train.video_tokenizer import (
    check_crop_frames,
    check_foreground_margin,
    parse_scales,
    train_video_tokenizer,
)

log = logging.getLogger(__name__)

DESCRIPTION = (
    "Training: the video tokenizer, the audio tokenizer, then the LM over their tokens and "
    "the super-resolution stage over the video tokenizer's."
)
STAGE_HELP = {
    "video-tokenizer": "the video tokenizer (first)",
    "audio-tokenizer": "the audio tokenizer (first, beside the video tokenizer)",
    "lm": "the LM over both tokenizers' codes (after them)",
    "sr": "the super-resolution stage over the video tokenizer's codes (after it)",
}
TRAIN: dict[str, Callable[[argparse.Namespace], dict]] = {
    "video-tokenizer": train_video_tokenizer,
    "audio-tokenizer": train_audio_tokenizer,
    "lm": train_lm,
    "sr": train_sr,
}


def common_parser() -> argparse.ArgumentParser:
    """The flags every stage takes (a parent parser)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("every stage")
    g.add_argument(
        "--config", default="demo", help="model preset for a new --out (tiny, demo, ...)"
    )
    g.add_argument("--out", required=True, help="checkpoint folder shared by the three stages")
    g.add_argument(
        "--steps", type=int, default=0, help="total optimizer steps (default: the stage's)"
    )
    g.add_argument("--resume", action="store_true", help="continue from DIR/train/<stage>.pt")
    g.add_argument("--data", default="shapes-av", help="'shapes-av' or a JSONL of {video, caption}")
    g.add_argument(
        "--batch",
        type=int,
        default=0,
        help="global batch size (default: the stage's); under torchrun each of the N "
        "processes takes batch / N examples, so it must divide by N",
    )
    g.add_argument(
        "--lr", type=float, default=0.0, help="peak learning rate (default: the stage's)"
    )
    g.add_argument(
        "--init-from",
        default="",
        help="a new run starts from the stage's weights in this checkpoint folder "
        "(fine-tuning; the optimizer starts fresh); --resume state wins over it",
    )
    g.add_argument(
        "--fresh-lr-mult",
        type=float,
        default=None,
        help="with --init-from: the tensors the file lacks (a part the config adds, such as "
        "--text-pool-heads) train at this multiple of the learning rate, the rest at the "
        "schedule's own (default 1; kept by --resume, and given again it wins)",
    )
    g.add_argument(
        "--max-minutes", type=float, default=0.0, help="stop (with a checkpoint) after this"
    )
    g.add_argument(
        "--stop-at",
        type=int,
        default=0,
        help="stop (with a checkpoint) at this step; --resume goes on to --steps",
    )
    g.add_argument("--checkpoint-minutes", type=float, default=3.0, help="checkpoint interval")
    g.add_argument("--log-every", type=int, default=10, help="log a loss line every N steps")
    g.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    g.add_argument(
        "--device",
        default="auto",
        help="auto (cuda when a GPU is seen, else cpu), cpu or cuda; bfloat16 autocast on cuda; "
        "under torchrun each process takes cuda:LOCAL_RANK (NCCL), or the CPU (gloo)",
    )
    g.add_argument(
        "--seed",
        type=int,
        default=0,
        help="torch and batch-order seed; with shapes-av it also picks the clips: "
        "example i is the clip of seed SEED + i (the lm stage: SEED + 1 + i), so a "
        "seed past the clips an earlier run drew gives clips it never saw",
    )
    return p


def add_video_tokenizer_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("video tokenizer")
    g.add_argument(
        "--crop-frames",
        type=int,
        default=0,
        help="frames per crop (4k+1; default: the card's whole clip)",
    )
    g.add_argument(
        "--image-batch",
        type=int,
        default=0,
        help="every other step trains on this many single frames (global, like --batch)",
    )
    g.add_argument(
        "--foreground-weight",
        type=float,
        default=0.0,
        help="extra loss weight on pixels unlike the frame's border",
    )
    g.add_argument(
        "--foreground-margin",
        type=int,
        default=0,
        help="with --foreground-weight, weight the background within this many pixels of the "
        "object alike (pixels at the card's size, doubled at scale 2), so that unsure edge "
        "pixels are not drawn as object (0: the object alone, which draws objects too large)",
    )
    g.add_argument(
        "--entropy-tokens",
        choices=["all", "foreground"],
        default="all",
        help="the tokens LFQ's entropy loss sees; foreground: only those whose patch holds "
        "the object, so flat background does not crowd the codebook",
    )
    g.add_argument(
        "--chroma-weight",
        type=float,
        default=0.0,
        help="extra loss weight on the colour-difference channels (G-B, R-(G+B)/2), "
        "foreground-weighted like the pixel loss",
    )
    g.add_argument(
        "--adversarial-weight",
        type=float,
        default=0.0,
        help="weight of a frame discriminator's hinge loss (0: off)",
    )
    g.add_argument(
        "--adversarial-warmup",
        type=int,
        default=200,
        help="discriminator steps before its loss reaches the tokenizer",
    )
    g.add_argument(
        "--decoder-only",
        action="store_true",
        help="train only the decoder, on the frozen codes of the --init-from encoder (tokens "
        "unchanged, so an LM trained on them stays valid; the decoder may be wider, see "
        "decoder_channels in config.json)",
    )
    g.add_argument(
        "--entropy-weight",
        type=float,
        default=None,
        help="LFQ entropy loss weight (default: the config's)",
    )
    g.add_argument(
        "--scales",
        default="1",
        help="comma-separated frame scales the steps take in turn: 1 is the card's size; "
        "1,2 alternates it with twice its width and height (the same scenes drawn at that "
        "resolution), the tokenizer a super-resolution stage decodes with",
    )


def add_audio_tokenizer_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("audio tokenizer")
    g.add_argument("--crop-seconds", type=float, default=0.0, help="seconds per crop")
    g.add_argument(
        "--wave-weight",
        type=float,
        default=None,
        help="weight of the waveform L1 term (0: spectral loss only; default 1, or 0 with the "
        "spectrum encoder)",
    )
    g.add_argument(
        "--shift-weight",
        type=float,
        default=0.0,
        help="weight of a term that keeps the latents still when the audio is delayed by "
        "under half a frame (codes of the sound, not its phase)",
    )


def add_lm_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("lm")
    g.add_argument(
        "--clips",
        type=int,
        default=1000,
        help="clips to tokenize for training (cached in DIR/train/lm_data.pt; a larger value "
        "later tokenizes only the clips it adds)",
    )
    g.add_argument(
        "--changed-weight",
        type=float,
        default=1.0,
        help="loss weight of the visual tokens that do not copy the previous latent frame's "
        "(all of frame 0, then where motion shows); 1: every token alike",
    )
    g.add_argument(
        "--input-noise",
        type=float,
        default=0.0,
        help="each row replaces its output tokens, as the LM reads them back, by random codes "
        "with a probability drawn from [0, P] (targets unchanged), so the LM must read the "
        "task's input, not only copy its own output",
    )
    g.add_argument(
        "--fsdp",
        action="store_true",
        help="under torchrun, shard the LM's weights, gradients and optimizer state across the "
        "processes (FSDP) instead of keeping a copy on each (DDP): for an LM whose training "
        "state does not fit one device (videopoet-8b); checkpoints stay whole",
    )
    g.add_argument(
        "--captions",
        choices=list(CAPTION_STYLES),
        default="template",
        help="Shapes-AV captions: template (the eight fixed templates the shipped LM trained "
        "on) or broad (models/captions.py: many colour names, verbs and constructions, style "
        "words, case and punctuation); a token cache of the other style is captioned again, "
        "its tokens kept",
    )
    g.add_argument(
        "--tokenizers-from",
        default="",
        help="a new --out (no config.json yet) starts with this checkpoint's config.json and "
        "both tokenizers (e.g. demo), so only the LM trains; ignored once the folder has them",
    )
    g.add_argument(
        "--text-pool-heads",
        type=int,
        default=None,
        help="set the LM's text_pool_heads (learnt queries pooling the caption, from zero) in "
        "the folder's config.json before the LM's first step; refused once the LM has trained "
        "with another value",
    )
    defaults = ", ".join(f"{t.value}={w:g}" for t, w in TASK_WEIGHTS.items())
    g.add_argument(
        "--task-weights",
        default="",
        help="how often each task is drawn, e.g. 'video_to_audio=4,inpaint=0' (changes to "
        f"the defaults: {defaults}; 0 leaves a task out)",
    )


def add_sr_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("super-resolution")
    g.add_argument(
        "--clips",
        type=int,
        default=2000,
        help="clips drawn at both sizes and tokenized (cached in DIR/train/sr_data.pt, written "
        "as it goes: a stopped run tokenizes on from where it stopped)",
    )
    g.add_argument(
        "--sr-preset",
        default=None,
        help="the SR model's shape (models/super_resolution.py: tiny, demo, videopoet-1b), "
        "written into config.json the first time (default: the model's own name)",
    )
    g.add_argument(
        "--tokenizers-from",
        default="",
        help="a new --out (no config.json yet) starts with this checkpoint's config.json and "
        "both tokenizers (e.g. demo), so only the SR stage trains",
    )
    g.add_argument(
        "--sr-tokenizer-from",
        default="",
        help="the stage's own video tokenizer at the larger size: this folder's "
        "video_tokenizer (same code bits; e.g. a `train video-tokenizer --scales 2` run, "
        "encoder and all), copied as sr_video_tokenizer.safetensors; the LM's codes at the "
        "card's size stay its tokenizer's (default: that tokenizer serves both sizes)",
    )
    g.add_argument(
        "--low-degrade",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="this share (0 to 1) of the training rows is conditioned on its clip blurred at "
        "the card's size (shrunk 4x and grown back) in place of its sharp codes, so that the "
        "stage draws the shape the text names over a blob (default 0: sharp codes only)",
    )
    g.add_argument(
        "--object-weight",
        type=float,
        default=0.0,
        metavar="W",
        help="the larger size's tokens that hold the object (pixels unlike the background) "
        "and the tokens next to them count 1 + W times in the masked-token loss, so that the "
        "outline is not a few percent of it (default 0: every token alike)",
    )


STAGE_FLAGS = {
    "video-tokenizer": add_video_tokenizer_flags,
    "audio-tokenizer": add_audio_tokenizer_flags,
    "lm": add_lm_flags,
    "sr": add_sr_flags,
}


def build_parser() -> argparse.ArgumentParser:
    common = common_parser()
    every = " ".join(a.option_strings[0] for a in common._actions if a.option_strings)
    epilog = f"Every stage takes {every}; `STAGE --help` lists them with the stage's own flags."
    p = argparse.ArgumentParser(
        prog="videopoet train",
        description=textwrap.fill(DESCRIPTION, 79),
        epilog=textwrap.fill(epilog, 79, break_on_hyphens=False),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="stage", required=True, metavar="STAGE", help="what to train")
    for stage, add_flags in STAGE_FLAGS.items():
        s = sub.add_parser(stage, parents=[common], help=STAGE_HELP[stage], description=DESCRIPTION)
        add_flags(s)
    return p


def run_stage(args: argparse.Namespace) -> dict:
    """Check the parsed flags, then train `args.stage`; raises TrainingError for a mistake the
    user can fix, before any tokenizing or training where it can tell.

    Under torchrun (RANK, WORLD_SIZE, LOCAL_RANK set) it joins the process group first and
    leaves it on every way out."""
    try:
        device = pipeline.resolve_device(args.device)
    except ValueError as exc:
        raise TrainingError(f"--device: {exc}") from None
    try:
        args.device = distributed.start(device)
        return _run_stage(args)
    finally:
        distributed.stop()


def _run_stage(args: argparse.Namespace) -> dict:
    world = distributed.world()
    if world.distributed:
        distributed.local_batch(args.batch or DEFAULTS[STAGES[args.stage]].batch)
        if args.stage == "video-tokenizer" and args.image_batch:
            distributed.local_batch(args.image_batch, "--image-batch")
        if args.stage == "video-tokenizer" and args.adversarial_weight:
            raise TrainingError(
                "--adversarial-weight is not supported under torchrun yet (the discriminator "
                "trains in one process): train the adversarial stage in one process"
            )
    elif getattr(args, "fsdp", False):
        log.warning("--fsdp shards across torchrun's processes; in one process it does nothing")
    if args.stage == "video-tokenizer":
        check_crop_frames(args.crop_frames)
        check_foreground_margin(args.foreground_margin, args.foreground_weight)
        args.scales = parse_scales(args.scales)
    if args.stage == "lm":
        task_weights(args.task_weights)  # a typo fails now, not after tokenizing
        if args.captions != "template" and not args.data.startswith("shapes-av"):
            raise TrainingError(
                f"--captions {args.captions} captions Shapes-AV clips; {args.data} has its own"
            )
    if args.stage in ("lm", "sr") and args.tokenizers_from:
        copy_tokenizers(args.tokenizers_from, args.out)
    if args.stage == "sr" and args.clips < 1:
        raise TrainingError(f"--clips must be at least 1; got {args.clips}")
    if args.stage == "sr" and not 0 <= args.low_degrade <= 1:
        raise TrainingError(f"--low-degrade is a share from 0 to 1; got {args.low_degrade:g}")
    if args.stage == "sr" and args.object_weight < 0:
        raise TrainingError(f"--object-weight must be 0 or more; got {args.object_weight:g}")
    if args.init_from:  # a wrong folder fails now, not after tokenizing
        args.init_from = init_path(args.init_from, STAGES[args.stage])
    if args.fresh_lr_mult is not None and not args.fresh_lr_mult > 0:
        raise TrainingError(f"--fresh-lr-mult must be above 0; got {args.fresh_lr_mult:g}")
    result = TRAIN[args.stage](args)
    log.info("%s done: %s", args.stage, result)
    return result


def main_train(argv: Sequence[str] | None = None) -> dict:
    """Parse `argv` and train its stage; a TrainingError exits with one line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    torch.set_num_threads(args.threads)
    try:
        return run_stage(args)
    except TrainingError as exc:
        message = " ".join(str(exc).split())
        raise SystemExit(f"{parser.prog} {args.stage}: error: {message}") from None
