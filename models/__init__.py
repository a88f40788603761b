"""The VideoPoet model stack: tokenizers, text encoder, prefix LM, sampling and the pipeline.

PyTorch only: nothing here knows of HTTP, Redis or a server's files. Three modules are
torch-free, for the service to import: `models.spec` (the task spec), `models.card` (what a
model serves) and `models.media` (ffmpeg in and out); the pipeline is imported lazily, so that
importing them stays light for the API process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.pipeline import GenerationInputs, GenerationResult, Pipeline, load_pipeline

__all__ = ["GenerationInputs", "GenerationResult", "Pipeline", "load_pipeline"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from models import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
