"""How a worker loads its model from the settings."""

import torch

from core.config import Settings
from workers import runtime


def test_dtype_and_compile_settings_reach_the_loaded_pipeline(monkeypatch) -> None:
    monkeypatch.delenv("VIDEOPOET_PIPELINE_FACTORY", raising=False)
    plain, _ = runtime.load_pipeline(Settings(model="tiny", device="cpu"))
    assert plain.lm.output.weight.dtype == torch.float32  # auto on CPU
    assert plain.static_step is None

    tuned, _ = runtime.load_pipeline(
        Settings(model="tiny", device="cpu", dtype="bfloat16", compile=True)
    )
    assert tuned.lm.output.weight.dtype == torch.bfloat16
    assert tuned.static_step is not None  # compiled lazily, on the first job
