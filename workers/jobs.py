"""Job functions: module-level, JSON arguments, enqueued by dotted string
(``workers.jobs.run_video``) so the API never imports this module or torch.

Jobs run in the worker process, on the pipeline that process loaded once, in batches of
compatible jobs (workers/batching.py picks them): `run_videos` runs a batch with one pipeline
call, `run_video` (the RQ job function) is a batch of one. A job's life: prepare (claim the
record, decode inputs) -> generate (the batch's pipeline call) -> store outputs (encode, mux,
thumbnail, spritesheet) -> completed; or cancelled, or failed with a message. Each job of a
batch keeps its own record, progress, cancel and failure; only what the batch shares (the
sampling, its timeout) fails the batch.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from rq import get_current_job
from rq.timeouts import JobTimeoutException

from core.artifacts import ArtifactError
from core.config import Settings
from core.store import FINISHED, Store, VideoError, VideoRecord, VideoStatus, format_seconds
from models.card import ModelCard
from models import media
from models.spec import (
    IMAGE_TASKS,
    BatchGenerationPipeline,
    GenerationCancelled,
    GenerationInputs,
    GenerationResult,
    Task,
    TaskSpec,
    TaskSpecError,
)
from workers import metrics, runtime

logger = logging.getLogger(__name__)

# Progress (0..100) at each stage boundary; sampling fills the span between them.
PROGRESS_INPUTS_DONE = 5
PROGRESS_SAMPLING_DONE = 95
# The record's progress is written at least this often while a job runs.
PROGRESS_WRITE_SECONDS = 1.0
# How often the cancel flag (the record's status) is read; sampling stops within this.
CANCEL_CHECK_SECONDS = 0.2
RUNNING = frozenset({VideoStatus.in_progress})

Outcome = dict[str, Any] | Exception  # a job's result dict, or what failed it
# The outcome of a job this worker no longer runs: found abandoned (its worker cut off from
# Redis longer than VIDEOPOET_WORKER_LOST_SECONDS) and queued again or taken by another run,
# whose result stands. The worker records nothing for it (workers.worker.perform_batch).
LOST = "lost"


class ProgressReporter:
    """Writes the progress of a batch's videos to their records from one thread, and turns a
    cancel (or a delete) of any of them into a local flag; so too a video this run lost (put
    back in the queue, or claimed by another run, while this worker could not reach Redis).

    The pipeline calls `on_progress` and the cancel check from its sampling loop: both are
    plain memory operations; only the thread talks to Redis.
    """

    def __init__(self, store: Store):
        self.store = store
        self.progress: dict[str, float] = {}
        self.stage: dict[str, str] = {}
        self._cancelled: set[str] = set()
        self._lost: set[str] = set()
        self._claims: dict[str, dict[str, Any] | None] = {}
        self._ended: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def __enter__(self) -> ProgressReporter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def watch(self, video_id: str, claim: dict[str, Any] | None = None) -> None:
        """Start watching a video this worker claimed (status in_progress; `claim` the
        record's fields that say it is this run's)."""
        self._claims[video_id] = claim
        self.set(video_id, 0.0, "inputs")

    def set(self, video_id: str, progress: float, stage: str) -> None:
        self.progress[video_id], self.stage[video_id] = progress, stage

    def on_progress(self, video_id: str, fraction: float, stage: str) -> None:
        """The pipeline's callback: fraction of this video's sampling done, and what it samples."""
        span = PROGRESS_SAMPLING_DONE - PROGRESS_INPUTS_DONE
        self.set(video_id, PROGRESS_INPUTS_DONE + span * min(max(fraction, 0.0), 1.0), stage)

    def cancelled(self, video_id: str) -> bool:
        """Whether to stop working on the video: cancelled, deleted, or lost to another run."""
        return video_id in self._cancelled or video_id in self._lost

    def lost(self, video_id: str) -> bool:
        return video_id in self._lost

    def end(self, video_id: str) -> None:
        """Stop watching a video: its record is about to get its final status."""
        self._ended.add(video_id)

    def _run(self) -> None:
        last_write: dict[str, float] = {}
        written: dict[str, tuple[int, str]] = {}
        while not self._stop.wait(CANCEL_CHECK_SECONDS):
            stopped = self._ended | self._cancelled | self._lost
            watched = [v for v in list(self.progress) if v not in stopped]
            for video_id in watched:
                try:
                    status = self.store.status(video_id)
                    if status is VideoStatus.queued:  # found abandoned, queued again
                        self._lost.add(video_id)
                        continue
                    if status is not VideoStatus.in_progress:
                        self._cancelled.add(video_id)
                        continue
                    now = time.monotonic()
                    current = (int(self.progress[video_id]), self.stage[video_id])
                    if (
                        current != written.get(video_id)
                        or now - last_write.get(video_id, 0.0) >= PROGRESS_WRITE_SECONDS
                    ):
                        done = self.store.update(
                            video_id,
                            only_if=RUNNING,
                            expect=self._claims.get(video_id),
                            progress=current[0],
                            stage=current[1],
                        )
                        if done == -2:  # another run claimed it
                            self._lost.add(video_id)
                        written[video_id], last_write[video_id] = current, now
                except Exception:  # a Redis hiccup must not kill the job; the next tick retries
                    logger.warning("progress of %s not written", video_id, exc_info=True)


# Outcomes of jobs that already ran in a batch, keyed by video id, waiting for rq's
# `perform_job` to call `run_video` and record them (see workers.worker.perform_batch).
_handed_over: dict[str, Outcome] = {}


@contextlib.contextmanager
def handed_over(video_id: str, outcome: Outcome) -> Iterator[None]:
    """While inside, `run_video(video_id)` returns (or raises) `outcome` instead of running."""
    _handed_over[video_id] = outcome
    try:
        yield
    finally:
        _handed_over.pop(video_id, None)


def run_video(video_id: str) -> dict[str, Any]:
    """The RQ job: generate the video `video_id` describes (its record holds the spec).

    `videopoet worker` runs it through `run_videos`, batched with compatible jobs, then lets
    rq record each outcome through this function (`handed_over`); alone, it runs here.
    Raises what failed it (its record already says so).
    """
    if video_id in _handed_over:
        outcome = _handed_over.pop(video_id)
    else:
        job = get_current_job()
        enqueued_at = [_timestamp(job.enqueued_at)] if job is not None else None
        timeout = job.timeout if job is not None else None
        outcome = run_videos([video_id], enqueued_at=enqueued_at, timeout=timeout)[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def run_videos(
    video_ids: Sequence[str],
    *,
    enqueued_at: Sequence[float | None] | None = None,
    timeout: float | None = None,
) -> list[Outcome]:
    """Several jobs as one batch: each job's outcome, in order (see VideoBatch.perform)."""
    return VideoBatch(
        runtime.current(), video_ids, enqueued_at=enqueued_at, timeout=timeout
    ).perform()


class VideoJob:
    """One video's part of a batch: its record, stages and endings."""

    def __init__(
        self,
        rt: runtime.Runtime,
        video_id: str,
        *,
        batch_size: int = 1,
        enqueued_at: float | None = None,
        timeout: float | None = None,
    ):
        self.rt = rt
        self.store = rt.store
        self.video_id = video_id
        self.batch_size = batch_size
        self.enqueued_at = enqueued_at
        self.timeout = timeout
        # The record's fields that say it is this run's ({"attempts": n}), once claimed.
        self.claim: dict[str, Any] | None = None
        self.started = time.perf_counter()
        # Seconds of the stages the pipeline does not time: queue, inputs, mux.
        self.timings: dict[str, float] = {}

    # --- lifecycle ---------------------------------------------------------------------
    def prepare(self) -> VideoRecord | None:
        """Claim the record (queued -> in_progress); None when it was cancelled or deleted, or
        another run claimed it first. Each claim counts an attempt: the count is this run's
        claim, which every later write checks."""
        record = self.store.get(self.video_id)
        if record is None or record.status in FINISHED:
            logger.info(
                "video %s is %s: not running it",
                self.video_id,
                "deleted" if record is None else record.status.value,
            )
            return None
        claimed = self.store.update(
            self.video_id,
            only_if=frozenset({VideoStatus.queued, VideoStatus.in_progress}),
            expect={"attempts": record.attempts},
            status=VideoStatus.in_progress,
            started_at=time.time(),
            progress=0,
            stage="inputs",
            attempts=record.attempts + 1,
            worker=self.rt.worker_name,
            error=None,
            batch_size=self.batch_size,
        )
        if claimed != 1:
            return None
        self.claim = {"attempts": record.attempts + 1}
        queued = max(0.0, time.time() - (self.enqueued_at or record.created_at))
        self.timings["queue"] = queued
        if record.attempts == 0:
            metrics.QUEUE_WAIT.labels(record.task.value).observe(queued)
        logger.info(
            "running %s (%s, attempt %d, batch of %d)",
            self.video_id,
            record.task.value,
            record.attempts + 1,
            self.batch_size,
        )
        return record

    # --- stages ------------------------------------------------------------------------
    def prepare_inputs(self, record: VideoRecord) -> tuple[TaskSpec, GenerationInputs]:
        """Decode the stored inputs (ffmpeg in a subprocess, with a timeout), from local
        copies where the artifact store is not a folder on this machine."""
        with self.store.artifacts.local_files(record.id, record.inputs.values()) as paths:
            files = {kind: paths[name] for kind, name in record.inputs.items()}
            return decode_inputs(record.spec, self.rt.pipeline.card, files, self.rt.settings)

    def store_outputs(self, record: VideoRecord, result: GenerationResult) -> dict[str, str]:
        """Encode the outputs into a local folder and store them in the artifact store."""
        artifacts = self.store.artifacts
        with artifacts.scratch(record.id) as folder:
            outputs = write_outputs(
                folder, record.task, result, timeout=self.rt.settings.ffmpeg_timeout_seconds
            )
            artifacts.publish(record.id, folder, outputs.values())
        return outputs

    # --- endings -----------------------------------------------------------------------
    def handle_success(
        self, record: VideoRecord, result: GenerationResult, outputs: dict[str, str]
    ) -> dict:
        frames = len(result.frames) if record.task not in IMAGE_TASKS else None
        seconds = media.STILL_VIDEO_SECONDS if frames is None else frames / result.fps
        timings = {
            "queue": self.timings.get("queue", 0.0),
            "inputs": self.timings.get("inputs", 0.0),
            **dict(result.timings),
            "mux": self.timings.get("mux", 0.0),
        }
        done = self.store.finish(
            self.video_id,
            VideoStatus.completed,
            only_if=RUNNING,
            expect=self.claim,
            progress=100,
            stage=None,
            outputs=outputs,
            seconds=format_seconds(seconds),
            tokens=dict(result.tokens),
            timings={k: round(float(v), 4) for k, v in timings.items()},
            has_audio=result.audio is not None,
            batch_size=self.batch_size,  # a running batch's peak (workers/continuous.py)
        )
        if done == -1:
            # Deleted while it ran: the files written since must go too.
            try:
                self.store.artifacts.delete(self.video_id)
            except ArtifactError as exc:
                logger.warning("outputs of deleted video %s not removed: %s", self.video_id, exc)
            logger.info("video %s was deleted while it ran", self.video_id)
            return {"status": "deleted"}
        if self.was_lost(done):
            return self.handle_lost()
        if done == 0:
            logger.info("video %s was cancelled before it could complete", self.video_id)
            return {"status": "cancelled"}
        self.observe(record, result, "completed")
        logger.info(
            "completed %s in %.1f s (%s tokens)",
            self.video_id,
            time.perf_counter() - self.started,
            result.tokens.get("generated"),
        )
        return {"status": "completed", "outputs": outputs}

    def was_lost(self, done: int) -> bool:
        """After a write the record refused (`done`): whether the video is no longer this
        run's (claimed by another run, or queued again for one)."""
        return done == -2 or (done == 0 and self.store.status(self.video_id) is VideoStatus.queued)

    def handle_lost(self) -> dict:
        """This worker could not reach Redis for longer than VIDEOPOET_WORKER_LOST_SECONDS: the
        video was found abandoned and runs again elsewhere, whose result stands."""
        logger.warning(
            "video %s was taken from this worker while it could not reach Redis and runs "
            "again elsewhere: this run's result is dropped",
            self.video_id,
        )
        return {"status": LOST}

    def handle_cancelled(self, record: VideoRecord) -> dict:
        self.store.update(
            self.video_id,
            only_if=frozenset({VideoStatus.cancelled}),
            expect=self.claim,
            stopped_at=time.time(),
        )
        metrics.JOBS.labels(record.task.value, "cancelled").inc()
        metrics.JOB_SECONDS.labels(record.task.value, "cancelled").observe(
            time.perf_counter() - self.started
        )
        logger.info("cancelled %s", self.video_id)
        return {"status": "cancelled"}

    def handle_failure(
        self, record: VideoRecord, exc: Exception, stage: str | None = None
    ) -> Outcome:
        """Fail the record with what went wrong; `stage` "inputs" when decoding them failed.
        Returns `exc`, or the lost outcome when the video is no longer this run's."""
        if isinstance(exc, JobTimeoutException):
            code = "timeout"
            message = (
                f"generation took longer than the job timeout ({self.timeout} s, "
                "VIDEOPOET_JOB_TIMEOUT_SECONDS) and was stopped"
            )
        elif isinstance(exc, ArtifactError):
            # The artifact store is unreachable or refuses us: the message names it (no secret).
            code, message = "storage_error", f"the artifact store failed: {exc}"
        elif isinstance(exc, TaskSpecError) or (
            isinstance(exc, media.MediaError) and stage == "inputs"
        ):
            code, message = "invalid_input", str(exc)
        elif _is_out_of_memory(exc):
            code = "out_of_memory"
            message = (
                f"ran out of accelerator memory while sampling this video "
                f"({type(exc).__name__}: {exc}); lower VIDEOPOET_BATCH_SIZE, run fewer workers "
                "per GPU, or ask for a shorter or smaller video"
            )
        else:
            code, message = "generation_error", f"{type(exc).__name__}: {exc}"
        done = self.store.finish(
            self.video_id,
            VideoStatus.failed,
            only_if=RUNNING,
            expect=self.claim,
            stage=None,
            error=VideoError(code=code, message=message),
        )
        if self.was_lost(done):
            return self.handle_lost()
        metrics.FAILURES.labels(code).inc()
        metrics.JOBS.labels(record.task.value, "failed").inc()
        metrics.JOB_SECONDS.labels(record.task.value, "failed").observe(
            time.perf_counter() - self.started
        )
        logger.warning("video %s failed (%s): %s", self.video_id, code, message)
        return exc

    def observe(self, record: VideoRecord, result: GenerationResult, status: str) -> None:
        task = record.task.value
        timings = dict(result.timings)
        for stage, seconds in timings.items():
            metrics.STAGE_SECONDS.labels(stage).observe(seconds)
        generated = int(result.tokens.get("generated", 0))
        metrics.TOKENS_GENERATED.labels(task).inc(generated)
        metrics.PREFIX_TOKENS.labels(task).inc(int(result.tokens.get("prefix", 0)))
        sampling = timings.get("sampling")
        if sampling and generated:
            metrics.TOKENS_PER_SECOND.labels(task).observe(generated / sampling)
        if result.time_to_first_token is not None:
            metrics.TIME_TO_FIRST_TOKEN.labels(task).observe(result.time_to_first_token)
        metrics.JOBS.labels(task, status).inc()
        metrics.JOB_SECONDS.labels(task, status).observe(time.perf_counter() - self.started)
        created = self.enqueued_at or record.created_at
        metrics.E2E_SECONDS.labels(task).observe(max(0.0, time.time() - created))


class VideoBatch:
    """Jobs sampled together: one pipeline call; each job its own record, progress, cancel and
    failure. A job whose inputs fail to decode or validate, or whose outputs fail to encode,
    fails alone; a cancelled job stops alone; an error inside the shared sampling (the GPU out
    of memory, say) samples the jobs again one by one, so only a job that fails alone fails;
    the job timeout ends every job still running."""

    def __init__(
        self,
        rt: runtime.Runtime,
        video_ids: Sequence[str],
        *,
        enqueued_at: Sequence[float | None] | None = None,
        timeout: float | None = None,
    ):
        self.rt = rt
        queued = list(enqueued_at) if enqueued_at is not None else [None] * len(video_ids)
        self.jobs = [
            VideoJob(rt, video_id, batch_size=len(video_ids), enqueued_at=at, timeout=timeout)
            for video_id, at in zip(video_ids, queued)
        ]

    def perform(self) -> list[Outcome]:
        """Each job's outcome, in order: its result dict (completed, cancelled, skipped, deleted)
        or the exception that failed it, its record already failed with the reason."""
        outcomes: list[Outcome | None] = [None] * len(self.jobs)
        running: list[tuple[int, VideoJob, VideoRecord]] = []
        with ProgressReporter(self.rt.store) as reporter:
            try:
                for i, job in enumerate(self.jobs):
                    record = job.prepare()
                    if record is None:
                        outcomes[i] = {"status": "skipped"}
                    else:
                        reporter.watch(job.video_id, job.claim)
                        running.append((i, job, record))
                self.perform_running(running, outcomes, reporter)
            except Exception as exc:  # the job timeout, or the shared sampling broke
                for i, job, record in running:
                    if outcomes[i] is None:
                        outcomes[i] = self.end(job, record, exc, reporter)
                for i in range(len(self.jobs)):
                    if outcomes[i] is None:  # not even claimed
                        outcomes[i] = exc
        return [o if o is not None else {"status": "skipped"} for o in outcomes]

    def perform_running(
        self,
        running: list[tuple[int, VideoJob, VideoRecord]],
        outcomes: list[Outcome | None],
        reporter: ProgressReporter,
    ) -> None:
        ready = []
        for i, job, record in running:
            if reporter.cancelled(job.video_id):
                outcomes[i] = self.end(job, record, None, reporter)
                continue
            try:
                with _timed("inputs", job.timings):
                    spec, inputs = job.prepare_inputs(record)
            except JobTimeoutException:
                raise
            except Exception as exc:  # this job's inputs: it fails alone
                outcomes[i] = self.end(job, record, exc, reporter, stage="inputs")
                continue
            reporter.set(job.video_id, PROGRESS_INPUTS_DONE, "sampling")
            ready.append((i, job, record, spec, inputs))
        if not ready:
            return
        results = self.generate(
            [(job.video_id, spec, inputs) for _, job, _, spec, inputs in ready], reporter
        )
        for (i, job, record, _, _), result in zip(ready, results):
            if isinstance(result, Exception) or reporter.cancelled(job.video_id):
                error = result if isinstance(result, Exception) else None
                outcomes[i] = self.end(job, record, error, reporter)
                continue
            reporter.set(job.video_id, PROGRESS_SAMPLING_DONE, "mux")
            try:
                with _timed("mux", job.timings):
                    outputs = job.store_outputs(record, result)
            except JobTimeoutException:
                raise
            except Exception as exc:  # this job's encoding: it fails alone
                outcomes[i] = self.end(job, record, exc, reporter)
                continue
            reporter.end(job.video_id)
            outcomes[i] = job.handle_success(record, result, outputs)

    def generate(
        self, rows: list[tuple[str, TaskSpec, GenerationInputs]], reporter: ProgressReporter
    ) -> list[GenerationResult | Exception]:
        """The pipeline's results (or a row's exception) for `rows` (video id, spec, inputs)."""
        pipeline = self.rt.pipeline
        ids = [video_id for video_id, _, _ in rows]
        specs = [spec for _, spec, _ in rows]
        inputs = [row_inputs for _, _, row_inputs in rows]
        if isinstance(pipeline, BatchGenerationPipeline):
            try:
                return _sample_batch(pipeline, ids, specs, inputs, reporter)
            except JobTimeoutException:
                raise
            except Exception as exc:
                if len(rows) == 1 or _is_cancel(exc):
                    raise
                # The shared sampling broke (typically the GPU ran out of memory for the whole
                # batch): run each video alone, so only one that fails by itself fails.
                logger.warning(
                    "a batch of %d failed while sampling (%s: %s); running its videos one by one",
                    len(rows),
                    type(exc).__name__,
                    exc,
                )
                _release_accelerator_memory()
                alone: list[GenerationResult | Exception] = []
                for row in range(len(rows)):
                    one = slice(row, row + 1)
                    try:
                        alone += _sample_batch(
                            pipeline, ids[one], specs[one], inputs[one], reporter
                        )
                    except JobTimeoutException:
                        raise
                    except Exception as row_exc:
                        _release_accelerator_memory()
                        alone.append(row_exc)
                return alone
        # A pipeline without batches (VIDEOPOET_PIPELINE_FACTORY): one row after another.
        results: list[GenerationResult | Exception] = []
        for video_id, spec, row_inputs in rows:
            try:
                results.append(
                    pipeline.generate(
                        spec,
                        row_inputs,
                        progress=functools.partial(reporter.on_progress, video_id),
                        should_cancel=functools.partial(reporter.cancelled, video_id),
                    )
                )
            except JobTimeoutException:
                raise
            except Exception as exc:
                results.append(exc)
        return results

    @staticmethod
    def end(
        job: VideoJob,
        record: VideoRecord,
        exc: Exception | None,
        reporter: ProgressReporter,
        stage: str | None = None,
    ) -> Outcome:
        """A job that will not complete: lost to another run, cancelled (exc None or a
        cancel), or failed by `exc`."""
        reporter.end(job.video_id)
        if reporter.lost(job.video_id):
            return job.handle_lost()
        if exc is None or _is_cancel(exc) or reporter.cancelled(job.video_id):
            return job.handle_cancelled(record)
        return job.handle_failure(record, exc, stage)


def decode_inputs(
    spec: TaskSpec, card: ModelCard, files: dict[str, Path], settings: Settings
) -> tuple[TaskSpec, GenerationInputs]:
    """The pipeline's inputs from files ("image", "video", "audio" -> path).

    Frames are resampled to the model's frame rate and scaled down to a few times its size
    (the pipeline resizes to the card anyway), so a long 4K upload cannot fill the memory; a
    mask box is scaled with them. Returns the spec to run (box scaled) and the inputs.
    """

    timeout = settings.ffmpeg_timeout_seconds
    # twice the largest size served: an input at the SR stage's size keeps its detail there
    max_side = max(256, 2 * card.sr_scale * max(card.width, card.height))
    inputs = GenerationInputs()
    if path := files.get("image"):
        inputs.image = media.decode_image(path, max_side=max_side, timeout=timeout)
    if path := files.get("video"):
        info = media.probe(path, timeout=timeout)
        frames, fps = media.decode_video(
            path,
            fps=card.fps,
            max_side=max_side,
            max_seconds=settings.max_input_seconds,
            timeout=timeout,
        )
        inputs.video, inputs.video_fps = frames, fps
        if spec.mask_box is not None and info.width and info.height:
            box = scale_box(spec.mask_box, info, frames.shape[1:3])
            spec = spec.model_copy(update={"mask_box": box})
    if path := files.get("audio"):
        inputs.audio = media.decode_audio(
            path,
            sample_rate=card.sample_rate,
            max_seconds=settings.max_input_seconds,
            timeout=timeout,
        )
        inputs.audio_sample_rate = card.sample_rate
    return spec, inputs


def write_outputs(
    folder: Path, task: Task, result: GenerationResult, *, timeout: float
) -> dict[str, str]:
    """Encode the mp4 (H.264 yuv420p + AAC when there is audio), the webp thumbnail and the
    jpg spritesheet, plus the PNG of a still. Returns variant -> file name."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(result.frames)
    outputs = {
        "video": "video.mp4",
        "thumbnail": "thumbnail.webp",
        "spritesheet": "spritesheet.jpg",
    }
    video_frames = frames
    if task in IMAGE_TASKS:
        outputs["image"] = "image.png"
        media.encode_image(folder / outputs["image"], frames[0], timeout=timeout)
        still = max(1, round(media.STILL_VIDEO_SECONDS * result.fps))
        video_frames = np.repeat(frames[:1], still, axis=0)
    media.encode_video(
        folder / outputs["video"],
        video_frames,
        result.fps,
        audio=result.audio,
        sample_rate=result.sample_rate,
        timeout=timeout,
    )
    media.write_thumbnail(folder / outputs["thumbnail"], frames, timeout=timeout)
    media.write_spritesheet(folder / outputs["spritesheet"], frames, timeout=timeout)
    return outputs


class _timed:
    """Time a job stage the pipeline does not time itself: into `into` and its metric."""

    def __init__(self, stage: str, into: dict[str, float]):
        self.stage = stage
        self.into = into

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, exc_type: object, *_: object) -> None:
        seconds = time.perf_counter() - self.t0
        self.into[self.stage] = seconds
        if exc_type is None:
            metrics.STAGE_SECONDS.labels(self.stage).observe(seconds)


def _sample_batch(
    pipeline: BatchGenerationPipeline,
    ids: list[str],
    specs: list[TaskSpec],
    inputs: list[GenerationInputs],
    reporter: ProgressReporter,
) -> list[GenerationResult | Exception]:
    """One generate_batch call, its progress and cancel checks mapped to the videos."""
    return list(
        pipeline.generate_batch(
            specs,
            inputs,
            progress=lambda row, fraction, stage: reporter.on_progress(ids[row], fraction, stage),
            should_cancel=lambda: [r for r, v in enumerate(ids) if reporter.cancelled(v)],
        )
    )


def _release_accelerator_memory() -> None:
    """After an out-of-memory error: give the cached CUDA blocks back before retrying."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _is_out_of_memory(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def _is_cancel(exc: Exception) -> bool:

    return isinstance(exc, GenerationCancelled)


def _timestamp(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


def scale_box(
    box: tuple[int, int, int, int], info: media.MediaInfo, decoded_hw: tuple[int, int]
) -> tuple[int, int, int, int]:
    """A mask box in the upload's pixels, in the pixels of the (scaled-down) decoded frames."""
    height, width = decoded_hw
    sx, sy = width / (info.width or width), height / (info.height or height)
    x0, y0 = math.floor(box[0] * sx), math.floor(box[1] * sy)
    x1 = min(width, max(x0 + 1, math.ceil(box[2] * sx)))
    y1 = min(height, max(y0 + 1, math.ceil(box[3] * sy)))
    return x0, y0, x1, y1
