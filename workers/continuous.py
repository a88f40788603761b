"""The continuous scheduler (`VIDEOPOET_SCHEDULER=continuous`): jobs join a running batch.

Having dequeued a job that one sampling pass makes (models/engine.py `streams`), a worker
opens a running batch (`ContinuousBatch`) for its token shapes and, between two decode
steps, claims queued jobs with the same batch key (workers/batching.py), prefills each on its
own into a free row and lets it join: the others wait one prefill. A row whose tokens are
complete leaves at once; its detokenizing, muxing and storing run on a finishing thread
beside the sampling, and the job is finished in RQ from the loop. Each job keeps its own
record, progress, cancel (it leaves at the next step), timeout (counted from its own start)
and failure (inputs, decoding or storing: that job alone; a step that fails for the whole
batch, the device out of memory, runs its rows again one at a time, so only a row that fails
by itself fails, as the static scheduler does). A job with live previews gets
the frames of each latent frame published as soon as its tokens are complete (on the same
thread, so they come in order and before the job's end).

Order is kept: only jobs at the head of their queue join, higher levels first; when the
head of a level holds a job of another shape (or one that takes several passes), the batch
takes no one else, runs out, and the worker's loop takes that job next. So too when Redis
cannot be reached: the batch takes no one else and its rows finish; what cannot be written
is handed to RQ's bookkeeping, which waits for Redis and drops a job run again elsewhere
meanwhile (workers/worker.py `still_runs`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from queue import Empty, Queue as OutcomeQueue
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.timeouts import JobTimeoutException

from core.store import VideoRecord
from models.spec import GenerationResult
from workers import jobs, metrics, runtime
from workers.batching import Batcher

if TYPE_CHECKING:
    from workers.worker import VideoWorker

logger = logging.getLogger(__name__)

# How often a running batch with free rows looks for queued jobs that can join.
ADMIT_INTERVAL_SECONDS = 0.01
# How long the loop waits for the finishing thread when no row samples.
IDLE_WAIT_SECONDS = 0.01


@dataclass
class _Member:
    """A job of the running batch, from its claim until it is finished in RQ."""

    job: Job
    execution: Execution
    queue: Queue
    video: jobs.VideoJob
    record: VideoRecord | None = None
    deadline: float = float("inf")
    admitted: bool = False  # its prefill was tried
    sampling: bool = False  # in the sampler's rows
    started: float = field(default_factory=time.monotonic)
    first_preview: bool = True
    preview_wanted: int | None = None  # the latest complete latent frame not yet published
    peak: int = 1  # most jobs in the batch while it was (its record's batch_size)


def continuous_key(batcher: Batcher, job: Job) -> Hashable | None:
    """The batch key of a job that can run in a continuous batch; None when it cannot (no
    record, another function, or a task that takes several sampling passes)."""
    from models.engine import streams

    key = batcher.key(job)
    if key is None:
        return None
    record = batcher.store.get(str(job.args[0]))
    if record is None or not streams(record.spec, batcher.card):
        return None
    return key


class ContinuousRun:
    """One running batch, from the job that opened it until its last job is finished."""

    def __init__(self, worker: VideoWorker, batcher: Batcher, queue: Queue, key: Hashable):
        self.worker = worker
        self.batcher = batcher
        self.queue = queue
        self.key = key
        self.rt = runtime.current()
        self.store = self.rt.store
        self.capacity = max(1, self.rt.settings.batch_size)
        self.members: dict[str, _Member] = {}
        self.running: list[tuple[Job, Execution]] = []  # heartbeated
        # videos whose tokens are complete: waiting for the finishing thread, being finished
        self.finishing: set[str] = set()
        self.to_finish: list[str] = []  # waiting (shared with the finishing thread)
        self.outcomes: OutcomeQueue[tuple[str, jobs.Outcome]] = OutcomeQueue()
        self._lock = threading.Lock()
        self.closed = False  # takes no more jobs
        # after a failed shared step: the rows run again one at a time (see `recover`)
        self.alone = False
        self._last_scan = 0.0

    def perform(self, first: Job) -> None:
        """Run `first` and every job that joins, until all are finished in RQ."""
        from workers.worker import JobHeartbeat

        record = self.store.get(str(first.args[0]))
        assert record is not None
        pipeline = cast(Any, self.rt.pipeline)
        self.batch = pipeline.continuous(record.spec, self.capacity)
        finisher = ThreadPoolExecutor(1, thread_name_prefix="finish")
        with jobs.ProgressReporter(self.store) as self.reporter:
            with JobHeartbeat(self.worker, self.running):
                try:
                    video_id = self.enlist(first, self.queue)
                    self._last_scan = time.monotonic()
                    self.admit_queued()  # those queued with it start with it
                    self.claim(video_id)
                    self.loop(finisher)
                except Exception as exc:  # the shared sampling broke: every job still here
                    logger.exception("a running batch of %d failed", len(self.members))
                    for video_id in list(self.members):
                        if video_id not in self.finishing:
                            self.end(video_id, exc)
                finally:
                    finisher.shutdown(wait=True)
                    self.collect()

    def loop(self, finisher: ThreadPoolExecutor) -> None:
        batch = self.batch
        while self.members:
            if not self.worker.stopping and not self.closed and self.free_rows() > 0:
                now = time.monotonic()
                if now - self._last_scan >= ADMIT_INTERVAL_SECONDS:
                    self._last_scan = now
                    self.admit_queued()
            self.admit_claimed()
            self.stop_leavers()
            if len(batch):
                try:
                    events = self.step()
                except JobTimeoutException:
                    raise
                except Exception as exc:
                    self.recover(exc)
                    continue
                complete = []
                for video_id, index in events:
                    member = self.members[video_id]
                    if index is None:
                        member.sampling = False
                        self.reporter.set(video_id, jobs.PROGRESS_SAMPLING_DONE, "mux")
                        complete.append(video_id)
                    else:
                        # the latest wins: a preview still waiting for the finishing thread
                        # is replaced, not queued behind (under load previews are skipped,
                        # not late)
                        with self._lock:
                            queued = member.preview_wanted is not None
                            member.preview_wanted = index
                        if not queued:
                            finisher.submit(self.publish_preview, video_id)
                if complete:
                    with self._lock:
                        self.to_finish += complete
                    self.finishing.update(complete)
                    finisher.submit(self.finish_ready)
                for video_id, member in self.members.items():
                    if member.sampling:
                        self.reporter.on_progress(
                            video_id, batch.progress(video_id), self.batch.task.value
                        )
            elif self.finishing:
                self.collect(wait=IDLE_WAIT_SECONDS)
            self.collect()

    def step(self) -> list[tuple[str, int | None]]:
        """One decode step, under the earliest deadline of the rows (a step that hangs, a
        stuck device, is stopped by it and ends the whole batch)."""
        deadline = min(m.deadline for m in self.members.values() if m.sampling)
        if deadline == float("inf"):
            return self.batch.step()
        seconds = max(1, math.ceil(deadline - time.monotonic()))
        with self.worker.death_penalty_class(seconds, JobTimeoutException):
            return self.batch.step()

    def recover(self, exc: Exception) -> None:
        """A step failed: the shared sampling broke (typically the device ran out of memory
        for the whole batch). Its rows leave with the cache; alone, the row fails with the
        error; with others, every row runs again one at a time (each gets its solo tokens),
        so only a row that fails by itself fails. The batch takes no one else."""
        from workers.jobs import _release_accelerator_memory

        rows = [video_id for video_id, member in self.members.items() if member.sampling]
        self.batch.restart()
        _release_accelerator_memory()
        for video_id in rows:
            self.members[video_id].sampling = False
        if len(rows) == 1 or self.alone:
            for video_id in rows:
                self.end(video_id, exc)
            return
        logger.warning(
            "a running batch of %d failed while sampling (%s: %s); running its rows one by one",
            len(rows),
            type(exc).__name__,
            exc,
        )
        self.alone = self.closed = True
        for video_id in rows:
            self.members[video_id].admitted = False

    # --- joining -----------------------------------------------------------------------
    def free_rows(self) -> int:
        """Rows free for jobs not claimed yet: the sampler's, less those of claimed jobs that
        wait for their prefill."""
        waiting = sum(1 for member in self.members.values() if not member.admitted)
        return self.batch.free_rows - waiting

    def admit_queued(self) -> None:
        """Claim the jobs at the head of the queues that fit this batch."""
        free = self.free_rows()
        if free <= 0:
            return
        try:
            taken, blocked = self.batcher.joiners(self.key, self.queue, free)
        except Exception:  # Redis away: the batch runs out with the rows it has
            logger.warning("could not look for jobs to join a running batch", exc_info=True)
            self.closed = True
            return
        if blocked:
            self.closed = True  # a job of another shape waits: let it run next
        joined = [self.enlist(job, self.worker.origin_queue(job, self.queue)) for job in taken]
        for video_id in joined:
            self.claim(video_id)

    def enlist(self, job: Job, queue: Queue) -> str:
        """Start the job's RQ execution (from here it is heartbeated, and re-run elsewhere if
        this worker dies) and count it in this batch."""
        execution = self.worker.start_execution(job)
        self.running.append((job, execution))
        video_id = str(job.args[0])
        enqueued = job.enqueued_at.timestamp() if job.enqueued_at else None
        video = jobs.VideoJob(self.rt, video_id, enqueued_at=enqueued, timeout=job.timeout)
        member = _Member(job, execution, queue, video)
        timeout = job.timeout or queue.DEFAULT_TIMEOUT
        if timeout and timeout > 0:
            member.deadline = time.monotonic() + timeout
        self.members[video_id] = member
        metrics.BATCH_SIZE.observe(len(self.members))
        for other in self.members.values():  # jobs in the batch together, at most
            other.peak = other.video.batch_size = max(other.peak, len(self.members))
        return video_id

    def claim(self, video_id: str) -> None:
        """Claim the job's record (queued -> in_progress); it waits to be prefilled."""
        member = self.members[video_id]
        try:
            record = member.video.prepare()
        except Exception as exc:  # Redis away: RQ gets the error once it is back
            logger.warning("could not claim video %s", video_id, exc_info=True)
            self.done(video_id, exc)
            return
        if record is None:
            self.done(video_id, {"status": "skipped"})
            return
        member.record = record
        self.reporter.watch(video_id, member.video.claim)

    def admit_claimed(self) -> None:
        """Decode the inputs of the claimed jobs and prefill them into the running batch."""
        for video_id, member in list(self.members.items()):
            if member.record is None or member.sampling or member.admitted:
                continue
            if self.alone and len(self.batch):
                return  # one at a time
            member.admitted = True
            video, record = member.video, member.record
            try:
                with jobs._timed("inputs", video.timings):
                    spec, inputs = video.prepare_inputs(record)
            except Exception as exc:  # its inputs: it fails alone
                self.end(video_id, exc, stage="inputs")
                continue
            try:
                self.batch.admit(video_id, spec, inputs, preview=record.preview)
            except Exception as exc:  # it cannot run (bad spec for the model): alone
                self.end(video_id, exc)
                continue
            member.sampling = True
            self.reporter.set(video_id, jobs.PROGRESS_INPUTS_DONE, self.batch.task.value)

    # --- leaving -----------------------------------------------------------------------
    def stop_leavers(self) -> None:
        """Rows cancelled (or lost) and rows past their job's timeout leave the batch."""
        now = time.monotonic()
        for video_id, member in list(self.members.items()):
            if not member.sampling:
                continue
            if self.reporter.cancelled(video_id):
                self.batch.drop(video_id)
                member.sampling = False
                self.end(video_id, None)
            elif now > member.deadline:
                self.batch.drop(video_id)
                member.sampling = False
                self.end(video_id, JobTimeoutException("job timeout"))

    def end(self, video_id: str, exc: Exception | None, stage: str | None = None) -> None:
        member = self.members[video_id]
        if member.sampling:
            self.batch.drop(video_id)
            member.sampling = False
        if member.record is None:
            self.done(video_id, exc if exc is not None else {"status": "skipped"})
            return
        try:
            outcome = jobs.VideoBatch.end(member.video, member.record, exc, self.reporter, stage)
        except Exception as error:  # its record cannot be written (Redis away)
            logger.warning("could not record the end of video %s", video_id, exc_info=True)
            outcome = error
        self.done(video_id, outcome)

    # --- finishing (on the finishing thread) --------------------------------------------
    def finish_ready(self) -> None:
        """Detokenize together the videos whose tokens are complete (those that finished
        while the last group was being finished included), then encode and store each; their
        outcomes go to the loop."""
        with self._lock:
            ready, self.to_finish = self.to_finish, []
        if not ready:
            return
        try:
            results = self.batch.finish_many(ready)
        except Exception as exc:
            results = dict.fromkeys(ready, exc)
        for video_id in ready:
            try:
                outcome = self.store_result(video_id, results[video_id])
            except Exception as exc:  # its record cannot be written (Redis away)
                logger.warning("could not record video %s", video_id, exc_info=True)
                outcome = exc
            self.outcomes.put((video_id, outcome))

    def store_result(self, video_id: str, result: GenerationResult | Exception) -> jobs.Outcome:
        """Encode and store one complete video; its outcome."""
        member = self.members[video_id]
        record, video = member.record, member.video
        assert record is not None
        try:
            if isinstance(result, Exception):
                raise result
            if self.reporter.cancelled(video_id):
                return jobs.VideoBatch.end(video, record, None, self.reporter)
            with jobs._timed("mux", video.timings):
                outputs = video.store_outputs(record, result)
        except Exception as exc:  # its decoding or storing: it fails alone
            return jobs.VideoBatch.end(video, record, exc, self.reporter)
        self.reporter.end(video_id)
        return video.handle_success(record, result, outputs)

    def publish_preview(self, video_id: str) -> None:
        """Decode and publish the latest preview of a video still sampling (one whose tokens
        are complete is about to be finished: its previews are skipped). A preview must never
        cost the video: a failure is a warning."""
        try:
            self._publish_preview(video_id)
        except Exception:
            logger.warning("preview of %s failed", video_id, exc_info=True)

    def _publish_preview(self, video_id: str) -> None:
        from workers.previews import publish_preview

        member = self.members.get(video_id)
        if member is None:
            return
        with self._lock:
            index, member.preview_wanted = member.preview_wanted, None
        if index is None:
            return
        if member.record is None or not member.sampling or self.reporter.cancelled(video_id):
            return
        frames = self.batch.preview(video_id, index)
        card = self.rt.pipeline.card
        claim = member.video.claim or {}
        published = publish_preview(
            self.store, video_id, frames, card.fps, index, expect=claim.get("attempts")
        )
        if published and member.first_preview:
            member.first_preview = False
            metrics.TIME_TO_FIRST_PREVIEW.labels(card.name).observe(
                time.time() - member.record.created_at
            )

    # --- RQ ----------------------------------------------------------------------------
    def collect(self, wait: float = 0.0) -> None:
        """Finish in RQ the jobs whose finishing is over (waiting up to `wait` for one)."""
        while True:
            try:
                video_id, outcome = (
                    self.outcomes.get(timeout=wait) if wait else (self.outcomes.get_nowait())
                )
            except Empty:
                return
            wait = 0.0
            self.finishing.discard(video_id)
            self.hand_over(video_id, outcome)

    def done(self, video_id: str, outcome: jobs.Outcome) -> None:
        self.hand_over(video_id, outcome)

    def hand_over(self, video_id: str, outcome: jobs.Outcome) -> None:
        member = self.members.pop(video_id, None)
        if member is None:
            return
        pair = (member.job, member.execution)
        if pair in self.running:
            self.running.remove(pair)
        self.worker.finish_in_rq(member.job, member.execution, member.queue, outcome)
