"""What a worker process holds for its whole life: settings, store and the loaded pipeline.

The worker installs one `Runtime` before it takes jobs; job functions (module-level, JSON
arguments) find it with `current()`. That is how the model stays loaded across jobs.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass

from core.config import Settings
from core.store import Store
from models.spec import GenerationPipeline

logger = logging.getLogger(__name__)

_current: Runtime | None = None


@dataclass
class Runtime:
    settings: Settings
    store: Store
    pipeline: GenerationPipeline  # models' Pipeline, or what VIDEOPOET_PIPELINE_FACTORY gives
    worker_name: str
    model_load_seconds: float = 0.0


def install(runtime: Runtime) -> None:
    global _current
    _current = runtime


def current() -> Runtime:
    if _current is None:
        raise RuntimeError(
            "no pipeline loaded in this process: jobs run in `videopoet worker`, which loads it"
        )
    return _current


def load_pipeline(settings: Settings) -> tuple[GenerationPipeline, float]:
    """The pipeline (by VIDEOPOET_PIPELINE_FACTORY when set) and the seconds it took."""
    from models.pipeline import resolve_device

    device = resolve_device(settings.device)
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    started = time.perf_counter()
    if settings.pipeline_factory:
        module_name, _, func_name = settings.pipeline_factory.partition(":")
        if not func_name:
            raise ValueError(
                f"VIDEOPOET_PIPELINE_FACTORY must be 'module:function'; got "
                f"{settings.pipeline_factory!r}"
            )
        factory = getattr(importlib.import_module(module_name), func_name)
        pipeline = factory(settings.model, device=device)
    else:
        from models import load_pipeline as load

        pipeline = load(
            settings.model,
            device=device,
            dtype=settings.dtype,
            compile=settings.compile,
            quantize=settings.quantize,
        )
    seconds = time.perf_counter() - started
    logger.info("loaded model %s on %s in %.1f s", pipeline.card.name, device, seconds)
    return pipeline, seconds
