"""A tiny checkpoint with a super-resolution stage: the tiny preset's weights and a random-init
SR stage (the tiny SR preset, 2x), serving 32x32 and 64x64 under the card name `tiny-sr` (its
own queue beside the test service's `tiny`)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from models.pipeline import ModelConfig, load_pipeline
from models.super_resolution import SuperResolution
from models.train.super_resolution import sr_config_for


def tiny_sr_checkpoint(folder: Path) -> Path:
    load_pipeline("tiny").save(folder)
    path = folder / "config.json"
    d = json.loads(path.read_text())
    sr = sr_config_for(ModelConfig.from_dict(d), "tiny")
    d["super_resolution"] = sr.to_dict()
    d["card"].update(name="tiny-sr", sr_scale=sr.scale)
    d["name"] = "tiny-sr"
    path.write_text(json.dumps(d, indent=2) + "\n")
    torch.manual_seed(0)
    model = SuperResolution(sr)
    model.init_weights()
    save_file(model.state_dict(), str(folder / "super_resolution.safetensors"))
    return folder
