"""The VideoPoet model stack: tokenizers, text encoder, prefix LM, sampling and the pipeline.

PyTorch only: nothing here knows of HTTP, Redis or a server's files. `models.spec` is the
one torch-free module (the task spec); everything else is imported lazily so that
`import models.spec` stays light for the API process.
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
