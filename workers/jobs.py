"""Job functions: module-level, JSON arguments, enqueued by dotted string
(``workers.jobs.run_video``) so the API never imports this module or torch.

A job runs in the worker process, on the pipeline that process loaded once. Its life:
prepare (claim the record, decode inputs) -> perform (generate) -> store outputs (encode,
mux, thumbnail, spritesheet) -> completed; or cancelled, or failed with a message.
"""

from __future__ import annotations

import logging
import math
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from rq import get_current_job
from rq.timeouts import JobTimeoutException

from app.config import Settings
from app.store import FINISHED, Store, VideoError, VideoRecord, VideoStatus, format_seconds
from models.card import ModelCard
from models.spec import IMAGE_TASKS, Task, TaskSpec, TaskSpecError
from workers import media, metrics, runtime

logger = logging.getLogger(__name__)

# Progress (0..100) at each stage boundary; sampling fills the span between them.
PROGRESS_INPUTS_DONE = 5
PROGRESS_SAMPLING_DONE = 95
# The record's progress is written at least this often while a job runs.
PROGRESS_WRITE_SECONDS = 1.0
# How often the cancel flag (the record's status) is read; sampling stops within this.
CANCEL_CHECK_SECONDS = 0.2
RUNNING = frozenset({VideoStatus.in_progress})


class JobCancelled(Exception):
    """The video was cancelled or deleted while its job ran."""


class ProgressReporter:
    """Writes progress to the record from a thread, and turns a cancel into a local flag.

    The pipeline calls `on_progress` and `should_cancel` from its sampling loop: both are
    plain memory operations; only the thread talks to Redis.
    """

    def __init__(self, store: Store, video_id: str):
        self.store = store
        self.video_id = video_id
        self.progress = 0.0
        self.stage = "inputs"
        self._cancelled = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"progress-{video_id}", daemon=True)

    def __enter__(self) -> ProgressReporter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def set(self, progress: float, stage: str) -> None:
        self.progress, self.stage = progress, stage

    def on_progress(self, fraction: float, stage: str) -> None:
        """The pipeline's callback: fraction of sampling done, and what it samples."""
        span = PROGRESS_SAMPLING_DONE - PROGRESS_INPUTS_DONE
        self.set(PROGRESS_INPUTS_DONE + span * min(max(fraction, 0.0), 1.0), stage)

    def should_cancel(self) -> bool:
        return self._cancelled.is_set()

    def check_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise JobCancelled(self.video_id)

    def _run(self) -> None:
        last_write = 0.0
        written: tuple[int, str] | None = None
        while not self._stop.wait(CANCEL_CHECK_SECONDS):
            try:
                status = self.store.status(self.video_id)
                if status is not VideoStatus.in_progress:
                    self._cancelled.set()
                    return
                now = time.monotonic()
                current = (int(self.progress), self.stage)
                if current != written or now - last_write >= PROGRESS_WRITE_SECONDS:
                    self.store.update(
                        self.video_id, only_if=RUNNING, progress=current[0], stage=current[1]
                    )
                    written, last_write = current, now
            except Exception:  # a Redis hiccup must not kill the job; the next tick retries
                logger.warning("progress of %s not written", self.video_id, exc_info=True)


def run_video(video_id: str) -> dict[str, Any]:
    """The job: generate the video `video_id` describes (its record holds the spec)."""
    return VideoJob(runtime.current(), video_id).perform()


class VideoJob:
    def __init__(self, rt: runtime.Runtime, video_id: str):
        self.rt = rt
        self.store = rt.store
        self.video_id = video_id
        self.started = time.perf_counter()

    # --- lifecycle ---------------------------------------------------------------------
    def prepare(self) -> VideoRecord | None:
        """Claim the record (queued -> in_progress); None when it was cancelled or deleted."""
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
            status=VideoStatus.in_progress,
            started_at=time.time(),
            progress=0,
            stage="inputs",
            attempts=record.attempts + 1,
            worker=self.rt.worker_name,
            error=None,
        )
        if claimed != 1:
            return None
        if record.attempts == 0:
            metrics.QUEUE_WAIT.labels(record.task.value).observe(
                max(0.0, time.time() - record.created_at)
            )
        return record

    def perform(self) -> dict[str, Any]:
        record = self.prepare()
        if record is None:
            return {"status": "skipped"}
        task = record.task.value
        logger.info("running %s (%s, attempt %d)", self.video_id, task, record.attempts + 1)
        try:
            with ProgressReporter(self.store, self.video_id) as reporter:
                with _timed("inputs"):
                    spec, inputs = self.prepare_inputs(record)
                reporter.set(PROGRESS_INPUTS_DONE, "sampling")
                reporter.check_cancelled()
                result = self.rt.pipeline.generate(
                    spec,
                    inputs,
                    progress=reporter.on_progress,
                    should_cancel=reporter.should_cancel,
                )
                reporter.check_cancelled()
                reporter.set(PROGRESS_SAMPLING_DONE, "mux")
                with _timed("mux"):
                    outputs = self.store_outputs(record, result)
        except Exception as exc:
            if _is_cancel(exc):
                return self.handle_cancelled(record)
            self.handle_failure(record, exc)
            raise
        return self.handle_success(record, result, outputs)

    # --- stages ------------------------------------------------------------------------
    def prepare_inputs(self, record: VideoRecord) -> tuple[TaskSpec, Any]:
        """Decode the stored inputs (ffmpeg in a subprocess, with a timeout)."""
        folder = self.store.video_dir(record.id)
        files = {kind: folder / name for kind, name in record.inputs.items()}
        return decode_inputs(record.spec, self.rt.pipeline.card, files, self.rt.settings)

    def store_outputs(self, record: VideoRecord, result: Any) -> dict[str, str]:
        return write_outputs(
            self.store.video_dir(record.id),
            record.task,
            result,
            timeout=self.rt.settings.ffmpeg_timeout_seconds,
        )

    # --- endings -----------------------------------------------------------------------
    def handle_success(self, record: VideoRecord, result: Any, outputs: dict[str, str]) -> dict:
        frames = len(result.frames) if record.task not in IMAGE_TASKS else None
        seconds = media.STILL_VIDEO_SECONDS if frames is None else frames / result.fps
        done = self.store.finish(
            self.video_id,
            VideoStatus.completed,
            only_if=RUNNING,
            progress=100,
            stage=None,
            outputs=outputs,
            seconds=format_seconds(seconds),
            tokens=dict(result.tokens),
            timings={k: round(float(v), 4) for k, v in result.timings.items()},
            has_audio=result.audio is not None,
        )
        if done == -1:
            # Deleted while it ran: the files written since must go too.
            shutil.rmtree(self.store.video_dir(self.video_id), ignore_errors=True)
            logger.info("video %s was deleted while it ran", self.video_id)
            return {"status": "deleted"}
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

    def handle_cancelled(self, record: VideoRecord) -> dict:
        self.store.update(
            self.video_id, only_if=frozenset({VideoStatus.cancelled}), stopped_at=time.time()
        )
        metrics.JOBS.labels(record.task.value, "cancelled").inc()
        metrics.JOB_SECONDS.labels(record.task.value, "cancelled").observe(
            time.perf_counter() - self.started
        )
        logger.info("cancelled %s", self.video_id)
        return {"status": "cancelled"}

    def handle_failure(self, record: VideoRecord, exc: Exception) -> None:
        if isinstance(exc, JobTimeoutException):
            job = get_current_job()
            timeout = job.timeout if job is not None else self.rt.settings.job_timeout_seconds
            code = "timeout"
            message = (
                f"generation took longer than the job timeout ({timeout} s, "
                "VIDEOPOET_JOB_TIMEOUT_SECONDS) and was stopped"
            )
        elif isinstance(exc, (TaskSpecError, media.MediaError)):
            code, message = "invalid_input", str(exc)
        else:
            code, message = "generation_error", f"{type(exc).__name__}: {exc}"
        self.store.finish(
            self.video_id,
            VideoStatus.failed,
            only_if=RUNNING,
            stage=None,
            error=VideoError(code=code, message=message),
        )
        metrics.FAILURES.labels(code).inc()
        metrics.JOBS.labels(record.task.value, "failed").inc()
        metrics.JOB_SECONDS.labels(record.task.value, "failed").observe(
            time.perf_counter() - self.started
        )
        logger.warning("video %s failed (%s): %s", self.video_id, code, message)

    def observe(self, record: VideoRecord, result: Any, status: str) -> None:
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
        metrics.E2E_SECONDS.labels(task).observe(max(0.0, time.time() - record.created_at))


def decode_inputs(
    spec: TaskSpec, card: ModelCard, files: dict[str, Path], settings: Settings
) -> tuple[TaskSpec, Any]:
    """The pipeline's inputs from files ("image", "video", "audio" -> path).

    Frames are resampled to the model's frame rate and scaled down to a few times its size
    (the pipeline resizes to the card anyway), so a long 4K upload cannot fill the memory; a
    mask box is scaled with them. Returns the spec to run (box scaled) and the inputs.
    """
    from models import GenerationInputs

    timeout = settings.ffmpeg_timeout_seconds
    max_side = max(256, 2 * max(card.width, card.height))
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


def write_outputs(folder: Path, task: Task, result: Any, *, timeout: float) -> dict[str, str]:
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
    """Observe a job stage's seconds (stages the pipeline does not time itself)."""

    def __init__(self, stage: str):
        self.stage = stage

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            metrics.STAGE_SECONDS.labels(self.stage).observe(time.perf_counter() - self.t0)


def _is_cancel(exc: Exception) -> bool:
    if isinstance(exc, JobCancelled):
        return True
    from models.pipeline import GenerationCancelled

    return isinstance(exc, GenerationCancelled)


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
