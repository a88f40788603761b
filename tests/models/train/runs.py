"""Helpers for the training tests: run a stage on the tiny preset, read its loss log, copy a
trained folder's tokenizers and token cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from models.train import main_train

TOKENIZERS = ("video_tokenizer.safetensors", "audio_tokenizer.safetensors")


def train_run(stage: str, out: Path, *extra: str) -> dict:
    """`videopoet train STAGE --config tiny --out OUT --threads 1 EXTRA...`."""
    return main_train([stage, "--config", "tiny", "--out", str(out), "--threads", "1", *extra])


def read_log(out: Path, component: str) -> list[dict]:
    lines = (out / "train" / f"{component}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def copy_tokenized(source: Path, out: Path, with_cache: bool = True) -> Path:
    """`out` with `source`'s config, tokenizers and (with_cache) token cache: an LM run that
    skips the tokenizer stages."""
    (out / "train").mkdir(parents=True, exist_ok=True)
    for name in ("config.json", *TOKENIZERS):
        shutil.copy(source / name, out / name)
    if with_cache:
        shutil.copy(source / "train" / "lm_data.pt", out / "train" / "lm_data.pt")
    return out
