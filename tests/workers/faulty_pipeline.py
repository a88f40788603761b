"""A pipeline factory for tests (VIDEOPOET_PIPELINE_FACTORY=tests.workers.faulty_pipeline:load):
the real pipeline, except on marker prompts.

- "[raise] ..."  raises RuntimeError before sampling (a model that breaks); in a batch, that
  row alone gets the error, the others run;
- "[slow] ..."   sleeps SLOW_STEP_SECONDS at each cancel check, i.e. each sampling step;
- "[hang] ..."   sleeps until the job's timeout stops it;
- "[hang-once] TOKEN ..." sleeps forever the first time TOKEN is seen (a marker file in the
  artifact folder), and runs normally after: a job whose first worker gets killed;
- "[bad-output] ..." returns frames no encoder takes (a row whose postprocessing fails).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

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
        _hang_on_markers([spec])
        if prompt.startswith("[slow]") and should_cancel is not None:
            should_cancel = _slowed(should_cancel)
        result = self.pipeline.generate(
            spec, inputs, progress=progress, should_cancel=should_cancel
        )
        return _spoil(spec, result)

    def generate_batch(
        self,
        specs: list[Any],
        inputs: list[Any],
        *,
        progress: Callable[[int, float, str], None] | None = None,
        should_cancel: Callable[[], Any] | None = None,
    ) -> list[Any]:
        _hang_on_markers(specs)
        results: list[Any] = [None] * len(specs)
        keep = []  # rows handed to the real pipeline, by their index here
        for i, spec in enumerate(specs):
            if (spec.prompt or "").startswith("[raise]"):
                results[i] = RuntimeError(RAISE_MESSAGE)
            else:
                keep.append(i)
        if keep:
            cancel = None
            if should_cancel is not None:
                check = should_cancel

                def cancel() -> list[int]:
                    dropped = set(check())
                    return [r for r, i in enumerate(keep) if i in dropped]

                if any((specs[i].prompt or "").startswith("[slow]") for i in keep):
                    cancel = _slowed(cancel)
            report = None
            if progress is not None:
                on_progress = progress

                def report(row: int, fraction: float, stage: str) -> None:
                    on_progress(keep[row], fraction, stage)

            done = self.pipeline.generate_batch(
                [specs[i] for i in keep],
                [inputs[i] for i in keep],
                progress=report,
                should_cancel=cancel,
            )
            for i, result in zip(keep, done):
                results[i] = _spoil(specs[i], result)
        return results

    def continuous(self, spec: Any, capacity: int) -> FaultyContinuous | None:
        """The real running batch (VIDEOPOET_SCHEDULER=continuous), with the same markers."""
        batch = self.pipeline.continuous(spec, capacity)
        return None if batch is None else FaultyContinuous(batch)


class PromptedRows:
    """A wrapper of a running batch that remembers each row's prompt until the row leaves."""

    batch: Any
    prompts: dict[Any, str]

    def drop(self, key: Any) -> None:
        self.prompts.pop(key, None)
        self.batch.drop(key)

    def restart(self) -> list[Any]:
        left = self.batch.restart()
        for key in left:
            self.prompts.pop(key, None)
        return list(left)


class FaultyContinuous(PromptedRows):
    """models.engine.ContinuousBatch, except on marker prompts (as FaultyPipeline):
    "[raise]" fails at admission (that row alone), "[hang]"/"[hang-once]" hang in the next
    step (as a stuck device would), "[slow]" rows slow every step, "[bad-output]" rows finish
    with frames no encoder takes."""

    def __init__(self, batch: Any):
        self.batch = batch
        self.task = batch.task
        self.prompts: dict[Any, str] = {}

    def __len__(self) -> int:
        return len(self.batch)

    @property
    def free_rows(self) -> int:
        return int(self.batch.free_rows)

    def progress(self, key: Any) -> float:
        return float(self.batch.progress(key))

    def admit(self, key: Any, spec: Any, inputs: Any, preview: bool = False) -> None:
        if (spec.prompt or "").startswith("[raise]"):
            raise RuntimeError(RAISE_MESSAGE)
        self.batch.admit(key, spec, inputs, preview=preview)
        self.prompts[key] = spec.prompt or ""

    def step(self) -> list[Any]:
        _hang_on_markers([SimpleNamespace(prompt=p) for p in self.prompts.values()])
        live = [k for k, p in self.prompts.items() if p.startswith("[slow]")]
        if live:
            time.sleep(SLOW_STEP_SECONDS)
        events = self.batch.step()
        for key, index in events:
            if index is None and not self.prompts[key].startswith("[bad-output]"):
                self.prompts.pop(key, None)
        return events

    def preview(self, key: Any, index: int) -> Any:
        return self.batch.preview(key, index)

    def finish_many(self, keys: list[Any]) -> dict[Any, Any]:
        results = self.batch.finish_many(keys)
        for key in keys:
            if self.prompts.pop(key, "").startswith("[bad-output]"):
                results[key] = _spoil(SimpleNamespace(prompt="[bad-output]"), results[key])
        return dict(results)


def _slowed(check: Callable[[], Any]) -> Callable[[], Any]:
    def slow_check() -> Any:
        time.sleep(SLOW_STEP_SECONDS)
        return check()

    return slow_check


def _hang_on_markers(specs: list[Any]) -> None:
    prompts = [spec.prompt or "" for spec in specs]
    if any(p.startswith("[hang]") for p in prompts):
        _sleep_forever()
    fresh = False
    for prompt in prompts:
        if prompt.startswith("[hang-once]"):
            token = prompt.split()[1]
            folder = os.environ.get("VIDEOPOET_ARTIFACT_DIR") or tempfile.gettempdir()
            marker = Path(folder) / f".hang-once-{token}"
            if not marker.exists():
                marker.touch()
                fresh = True
    if fresh:
        _sleep_forever()


def _spoil(spec: Any, result: Any) -> Any:
    if (spec.prompt or "").startswith("[bad-output]") and not isinstance(result, Exception):
        result.frames = np.zeros((0, 0, 0, 3), np.uint8)
    return result


def _sleep_forever() -> None:
    while True:
        time.sleep(0.1)


def load(name: str, device: str = "cpu") -> FaultyPipeline:
    return FaultyPipeline(load_pipeline(name, device=device))
