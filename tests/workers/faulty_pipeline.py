"""A pipeline factory for tests (VIDEOPOET_PIPELINE_FACTORY=tests.workers.faulty_pipeline:load):
the real pipeline, except on marker prompts.

- "[raise] ..."  raises RuntimeError before sampling (a model that breaks);
- "[slow] ..."   sleeps SLOW_STEP_SECONDS at each cancel check, i.e. each sampling step;
- "[hang] ..."   sleeps until the job's timeout stops it;
- "[hang-once] TOKEN ..." sleeps forever the first time TOKEN is seen (a marker file in the
  artifact folder), and runs normally after: a job whose first worker gets killed.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from models import load_pipeline

SLOW_STEP_SECONDS = 0.1
RAISE_MESSAGE = "the model broke on purpose"


class FaultyPipeline:
    def __init__(self, pipeline: Any):
        self.pipeline = pipeline
        self.card = pipeline.card

    def generate(
        self,
        spec: Any,
        inputs: Any = None,
        *,
        progress: Callable[[float, str], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> Any:
        prompt = spec.prompt or ""
        if prompt.startswith("[raise]"):
            raise RuntimeError(RAISE_MESSAGE)
        if prompt.startswith("[hang]"):
            _sleep_forever()
        if prompt.startswith("[hang-once]"):
            token = prompt.split()[1]
            folder = os.environ.get("VIDEOPOET_ARTIFACT_DIR") or tempfile.gettempdir()
            marker = Path(folder) / f".hang-once-{token}"
            if not marker.exists():
                marker.touch()
                _sleep_forever()
        if prompt.startswith("[slow]") and should_cancel is not None:
            check = should_cancel

            def should_cancel() -> bool:
                time.sleep(SLOW_STEP_SECONDS)
                return check()

        return self.pipeline.generate(spec, inputs, progress=progress, should_cancel=should_cancel)


def _sleep_forever() -> None:
    while True:
        time.sleep(0.1)


def load(name: str, device: str = "cpu") -> FaultyPipeline:
    return FaultyPipeline(load_pipeline(name, device=device))
