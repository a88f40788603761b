"""A tiny checkpoint with a super-resolution stage: the tiny preset's weights and a random-init
SR stage (the tiny SR preset, 2x), serving 32x32 and 64x64 under the card name `tiny-sr` (its
own queue beside the test service's `tiny`). `own_tokenizer`: the stage has its own video
tokenizer at 64x64 (the tiny preset's, initialised from another seed)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from models.pipeline import SR_TOKENIZER, ModelConfig, load_pipeline
from models.super_resolution import SuperResolution
from models.train.super_resolution import sr_config_for
from models.video_tokenizer import VideoTokenizer


def tiny_sr_checkpoint(folder: Path, own_tokenizer: bool = False) -> Path:
    load_pipeline("tiny").save(folder)
    path = folder / "config.json"
    d = json.loads(path.read_text())
    sr = sr_config_for(ModelConfig.from_dict(d), "tiny")
    d["super_resolution"] = sr.to_dict()
    d["card"].update(name="tiny-sr", sr_scale=sr.scale)
    d["name"] = "tiny-sr"
    if own_tokenizer:
        d[SR_TOKENIZER] = d["video_tokenizer"]
        torch.manual_seed(7)
        save_file(
            VideoTokenizer(ModelConfig.from_dict(d).video).state_dict(),
            str(folder / f"{SR_TOKENIZER}.safetensors"),
        )
    path.write_text(json.dumps(d, indent=2) + "\n")
    torch.manual_seed(0)
    model = SuperResolution(sr)
    model.init_weights()
    save_file(model.state_dict(), str(folder / "super_resolution.safetensors"))
    return folder
