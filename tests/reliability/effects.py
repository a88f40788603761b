"""A pipeline factory for the reliability tests
(VIDEOPOET_PIPELINE_FACTORY=tests.reliability.effects:load): the faulty test pipeline, plus a
ledger of side effects that survives the worker being SIGKILLed.

Each line of the file named by `VIDEOPOET_TEST_LEDGER` is one event, appended with a single
write (O_APPEND, so lines from several processes never interleave):

- `completed <video id> <pid>`: the store moved a video to completed (the transition that
  makes it visible to clients; it may happen once per video, whatever crashed);
- `started <prompt> <pid>`: the pipeline was handed a row (GPU work begins);
- `sampled <prompt> <pid>`: the pipeline finished sampling a row (a killed worker's row that
  is re-run on another worker shows up twice: that is the retry, not a duplicate output).

One more marker prompt besides the faulty pipeline's: "[oom] ..." makes the sampling of any
batch holding that row raise torch.cuda.OutOfMemoryError a quarter of the way through, as a
GPU out of memory would (the whole batch's call fails, mid-sampling).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from core.store import Store, VideoStatus
from tests.workers import faulty_pipeline

LEDGER_ENV = "VIDEOPOET_TEST_LEDGER"
OOM_MARKER = "[oom]"
OOM_MESSAGE = "CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.10 GiB total capacity)"
# How far into sampling the out-of-memory error comes.
OOM_AT_FRACTION = 0.25


def record(event: str, subject: str) -> None:
    path = os.environ.get(LEDGER_ENV)
    if not path:
        return
    line = f"{event} {subject.replace(' ', '_')} {os.getpid()}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_ledger(path: str | os.PathLike) -> list[tuple[str, str, int]]:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    return [(e, s, int(p)) for e, s, p in (line.split() for line in text.splitlines())]


def _spy_on_completions() -> None:
    """Wrap Store.finish in this (worker) process: log every transition to completed."""
    if getattr(Store.finish, "_ledger", False):
        return
    original = Store.finish

    def finish(self: Store, video_id: str, status: VideoStatus, **kwargs: Any) -> int:
        done = original(self, video_id, status, **kwargs)
        if done == 1 and status is VideoStatus.completed:
            record("completed", video_id)
        return done

    finish._ledger = True  # type: ignore[attr-defined]
    Store.finish = finish  # type: ignore[method-assign]


class LedgerPipeline:
    """Delegates to the faulty pipeline; logs each row whose sampling finished."""

    def __init__(self, pipeline: Any):
        self.pipeline = pipeline
        self.card = pipeline.card

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pipeline, name)

    def generate(self, spec: Any, *args: Any, **kwargs: Any) -> Any:
        specs = spec if isinstance(spec, list) else [spec]
        for one in specs:
            record("started", one.prompt or "-")
        if kwargs.get("progress") is not None:
            kwargs["progress"] = _oom_midway(specs, kwargs["progress"], lambda *a: a[0])
        result = self.pipeline.generate(spec, *args, **kwargs)
        for one in specs:
            record("sampled", one.prompt or "-")
        return result

    def generate_batch(self, specs: list[Any], *args: Any, **kwargs: Any) -> list[Any]:
        for spec in specs:
            record("started", spec.prompt or "-")
        if kwargs.get("progress") is not None:
            kwargs["progress"] = _oom_midway(specs, kwargs["progress"], lambda *a: a[1])
        results = self.pipeline.generate_batch(specs, *args, **kwargs)
        for spec, result in zip(specs, results, strict=True):
            if not isinstance(result, BaseException):
                record("sampled", spec.prompt or "-")
        return results

    def continuous(self, spec: Any, capacity: int) -> Any:
        batch = self.pipeline.continuous(spec, capacity)
        return None if batch is None else LedgerContinuous(batch)


class LedgerContinuous(faulty_pipeline.PromptedRows):
    """A running batch (VIDEOPOET_SCHEDULER=continuous) that logs each row admitted and each
    row whose tokens are complete; a step raises the out-of-memory error once an "[oom]" row
    is a quarter of the way through."""

    def __init__(self, batch: Any):
        self.batch = batch
        self.prompts: dict[Any, str] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.batch, name)

    def __len__(self) -> int:
        return len(self.batch)

    def admit(self, key: Any, spec: Any, *args: Any, **kwargs: Any) -> None:
        record("started", spec.prompt or "-")
        self.batch.admit(key, spec, *args, **kwargs)
        self.prompts[key] = spec.prompt or "-"

    def step(self) -> list[Any]:
        for key, prompt in self.prompts.items():
            if prompt.startswith(OOM_MARKER) and self.batch.progress(key) >= OOM_AT_FRACTION:
                import torch

                raise torch.cuda.OutOfMemoryError(OOM_MESSAGE)
        events = self.batch.step()
        for key, index in events:
            if index is None:
                record("sampled", self.prompts.pop(key, "-"))
        return list(events)


def _oom_midway(specs: list[Any], progress: Any, fraction_of: Any) -> Any:
    """The progress callback, raising an out-of-memory error partway when a row asks for it."""
    if not any((spec.prompt or "").startswith(OOM_MARKER) for spec in specs):
        return progress

    def report(*args: Any) -> None:
        if fraction_of(*args) >= OOM_AT_FRACTION:
            import torch

            raise torch.cuda.OutOfMemoryError(OOM_MESSAGE)
        progress(*args)

    return report


def load(name: str, device: str = "cpu") -> LedgerPipeline:
    _spy_on_completions()
    return LedgerPipeline(faulty_pipeline.load(name, device=device))
