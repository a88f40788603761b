"""Training: the video tokenizer, the audio tokenizer, then the LM over their tokens.

    python -m models.train video-tokenizer --config demo --out DIR [--steps N] [--resume]
    python -m models.train audio-tokenizer --config demo --out DIR [--steps N] [--resume]
    python -m models.train lm              --config demo --out DIR [--steps N] [--resume]

(the CLI's `videopoet train ...` calls `main_train(argv)`; `STAGE --help` lists a stage's
flags). The three stages share one folder: each writes its component's `.safetensors` beside
`config.json`, so once all three have run, DIR is a checkpoint that `load_pipeline(DIR)` loads.
Training state (weights, optimizer, step, data order) lives in `DIR/train/<stage>.pt`, written
every `--checkpoint-minutes` and at the end; `--resume` continues from it to `--steps` in total.
Losses go to `DIR/train/<stage>.jsonl`, one JSON object per logged step.

Modules:
    data             the data sources: the Shapes-AV stream, JSONL files of videos (decoded by
                     models.media), clip windows, `open_data`
    loop             the run folder, checkpoints and resume, the JSONL loss log, the lr
                     schedule, autocast, `--init-from` loading and the shared training loop
    video_tokenizer  stage 1, with `discriminator` (its optional frame discriminator)
    audio_tokenizer  stage 2
    lm               stage 3: the LM's batches per task and its losses
    token_cache      the LM's tokenized clips and caption states, cached in the run folder
    distributed      torchrun: the process group, each rank's share of a global batch, DDP or
                     FSDP around a stage's step, whole checkpoints from sharded state
    recipe           the demo on one GPU (`python -m models.train.recipe`, `make demo-gpu`)
    cli              the argument parser (a subcommand per stage) and `main_train`
    errors           `TrainingError`, raised for a mistake the user can fix
"""

from models.train.audio_tokenizer import shift_distance, stft_loss, train_audio_tokenizer
from models.train.cli import build_parser, main_train, run_stage
from models.train.data import Example, JsonlVideoData, ShapesAVData, clip_window, open_data
from models.train.discriminator import Adversary, FrameDiscriminator
from models.train.errors import TrainingError
from models.train.lm import (
    TASK_WEIGHTS,
    batch_to_device,
    changed_tokens,
    corrupt_outputs,
    lm_batch,
    lm_loss,
    new_tokens,
    task_weights,
    token_losses,
    train_lm,
)
from models.train.loop import DEFAULTS, STAGES, Run, init_path, load_matching, lr_at, train_loop
from models.train.token_cache import (
    build_lm_data,
    cached_lm_data,
    encode_captions,
    join_lm_data,
    token_digest,
    tokenize_examples,
)
from models.train.video_tokenizer import colour_differences, foreground, train_video_tokenizer

__all__ = [
    "DEFAULTS",
    "STAGES",
    "TASK_WEIGHTS",
    "Adversary",
    "Example",
    "FrameDiscriminator",
    "JsonlVideoData",
    "Run",
    "ShapesAVData",
    "TrainingError",
    "batch_to_device",
    "build_lm_data",
    "build_parser",
    "cached_lm_data",
    "changed_tokens",
    "clip_window",
    "colour_differences",
    "corrupt_outputs",
    "encode_captions",
    "foreground",
    "init_path",
    "join_lm_data",
    "lm_batch",
    "lm_loss",
    "load_matching",
    "lr_at",
    "main_train",
    "new_tokens",
    "open_data",
    "run_stage",
    "shift_distance",
    "stft_loss",
    "task_weights",
    "token_digest",
    "token_losses",
    "tokenize_examples",
    "train_audio_tokenizer",
    "train_lm",
    "train_loop",
    "train_video_tokenizer",
]
