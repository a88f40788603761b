"""Which queued jobs a worker may sample together, and taking them off the queue.

A worker dequeues one job the usual RQ way (BLMOVE to the queue's intermediate list), then looks
for queued jobs that would share its sampling batch and takes up to `batch_size - 1` of them,
waiting until `batch_window_seconds` have passed since the latest of them was queued (a burst
of requests fills one batch; a lone request waits one window at most; no batch waits more than
`batch_size` windows). Jobs that do not fit stay where they are, in order, for the next
dequeue. Priority levels (core/queue.py) hold: companions come from the job's own level and
the levels above it, higher first, never from a lower one, so a batch never carries a `low`
job past a waiting `normal` or `high` one. Torch-free: the key comes from the record's spec and the model card, as the
pipeline's own grouping would (models/pipeline.py `_groups`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Sequence
from typing import cast

from redis import Redis
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer

from core.queue import RUN_VIDEO
from core.store import Store, VideoRecord, VideoStatus
from models.card import ModelCard
from models.spec import Task, TaskSpecError, output_frames

logger = logging.getLogger(__name__)

# Queued jobs looked at per scan: a batch is found among the first few; deeper jobs wait.
SCAN_DEPTH = 64
# Pause between two scans of the queue while the window is open.
SCAN_INTERVAL_SECONDS = 0.005
# Tasks whose output keeps the input video, so rows batch only with the same input length.
KEEPS_INPUT = frozenset({Task.continuation, Task.av_continuation})

# Moves the given job ids that are still queued to the intermediate list (as RQ's own BLMOVE
# does for the job it dequeues); returns those it moved. Atomic: two workers never take one job.
_CLAIM = """
local moved = {}
for _, id in ipairs(ARGV) do
  if redis.call('LREM', KEYS[1], 1, id) == 1 then
    redis.call('RPUSH', KEYS[2], id)
    table.insert(moved, id)
  end
end
return moved
"""


def batch_key(record: VideoRecord, card: ModelCard, timeout: float | None) -> Hashable | None:
    """Jobs with equal keys can share one sampling batch; None: this one runs alone.

    Same task, output frames and soundtrack (every token shape and number of steps), same use
    of guidance (a guided row doubles the batch's rows), same input length where the output
    keeps the input, and the same job timeout (a batch has one deadline).
    """
    spec = record.spec
    try:
        frames = output_frames(spec, card)
    except TaskSpecError:
        return None  # it fails at once, on its own
    input_frames = None
    if spec.task in KEEPS_INPUT and record.input_seconds is not None:
        input_frames = round(record.input_seconds * card.fps)
    return (spec.task, frames, spec.with_audio, spec.guidance_scale != 1.0, input_frames, timeout)


class Batcher:
    """Takes the queued jobs that can join a job's batch."""

    def __init__(
        self,
        connection: Redis,
        store: Store,
        card: ModelCard,
        *,
        size: int,
        window_seconds: float,
        serializer: object,
        levels: Sequence[str] = (),
    ):
        self.connection = connection
        self.store = store
        self.card = card
        self.size = size
        self.window_seconds = window_seconds
        self.serializer = serializer
        # Queue names in the order workers read them (high first); empty: one level.
        self.levels = list(levels)
        self._claim = connection.register_script(_CLAIM)

    def scanned(self, queue: Queue) -> list[Queue]:
        """Where `queue`'s job may find companions: its level and those above, higher first."""
        if queue.name not in self.levels:
            return [queue]
        above = self.levels[: self.levels.index(queue.name)]
        return [
            Queue(name, connection=self.connection, serializer=JSONSerializer) for name in above
        ] + [queue]

    def key(self, job: Job | None) -> Hashable | None:
        """The job's batch key; None for what must run alone (another function, no record)."""
        if job is None or job.func_name != RUN_VIDEO or len(job.args) != 1:
            return None
        record = self.store.get(str(job.args[0]))
        if record is None or record.status is not VideoStatus.queued:
            return None
        return batch_key(record, self.card, job.timeout)

    def companions(self, job: Job, queue: Queue, stop: Callable[[], bool]) -> list[Job]:
        """Up to size - 1 queued jobs that fit `job`'s batch, moved to the intermediate list.

        Waits until `batch_window_seconds` have passed since the latest of the batch's jobs
        was queued (not at all when they are that old already), or until the batch is full,
        or until `stop()`.
        """
        wanted = self.size - 1
        key = self.key(job) if wanted > 0 else None
        if key is None:
            return []
        deadline = self._window_end(job)
        keys: dict[str, Hashable | None] = {job.id: key}
        found: dict[str, Job] = {}
        taken: list[Job] = []
        levels = self.scanned(queue)
        while True:
            with self.connection.pipeline() as pipe:
                for level in levels:
                    pipe.lrange(level.key, 0, SCAN_DEPTH - 1)
                queued = cast("list[list[bytes]]", pipe.execute())
            per_level = [[i.decode() for i in ids] for ids in queued]
            ids = [i for level_ids in per_level for i in level_ids]  # higher levels first
            new = [i for i in ids if i not in keys]
            for job_id, candidate in zip(
                new, Job.fetch_many(new, self.connection, serializer=self.serializer)
            ):
                keys[job_id] = self.key(candidate)
                if candidate is not None:
                    found[job_id] = candidate
            for level, level_ids in zip(levels, per_level):
                fits = [i for i in level_ids if keys.get(i) == key][: wanted - len(taken)]
                if not fits:
                    continue
                moved = self._claim(keys=[level.key, level.intermediate_queue_key], args=fits)
                for job_id in moved:
                    companion = found[job_id.decode() if isinstance(job_id, bytes) else job_id]
                    taken.append(companion)
                    deadline = max(deadline, self._window_end(companion))
            if len(taken) >= wanted or stop() or time.time() >= deadline:
                return taken
            time.sleep(min(SCAN_INTERVAL_SECONDS, max(0.0, deadline - time.time())))

    def joiners(self, key: Hashable, queue: Queue, limit: int) -> tuple[list[Job], bool]:
        """Queued jobs that can join a running batch of `key` (the continuous scheduler) that
        `queue`'s job opened, moved to the intermediate list: those at the head of its level
        and the levels above (as for `companions`), higher levels first, up to `limit`, without
        waiting. Also whether a job that does not fit waits at the head of one of these levels
        (the batch should then take no more, so that job runs next).
        """
        from workers.continuous import continuous_key

        queues = self.scanned(queue)
        with self.connection.pipeline() as pipe:
            for level in queues:
                pipe.lrange(level.key, 0, max(0, limit - 1))
            heads = cast("list[list[bytes]]", pipe.execute())
        taken: list[Job] = []
        for level, ids in zip(queues, heads):
            wanted = [i.decode() for i in ids]
            if not wanted:
                continue
            fits: list[str] = []
            found: dict[str, Job] = {}
            for job_id, job in zip(
                wanted, Job.fetch_many(wanted, self.connection, serializer=self.serializer)
            ):
                if job is None or continuous_key(self, job) != key:
                    break
                fits.append(job_id)
                found[job_id] = job
            if fits:
                moved = self._claim(keys=[level.key, level.intermediate_queue_key], args=fits)
                taken += [found[m.decode() if isinstance(m, bytes) else m] for m in moved]
            if len(fits) < len(wanted) or len(taken) >= limit:
                # a job of another shape is next in this level (or the batch is full)
                return taken, len(fits) < len(wanted)
        return taken, False

    def _window_end(self, job: Job) -> float:
        """When the window that `job`'s arrival opened closes (unix time): one window after it
        was queued, so at most one window from now."""
        now = time.time()
        queued_at = job.enqueued_at.timestamp() if job.enqueued_at else now
        return min(queued_at, now) + self.window_seconds
