"""The RQ side of the API: one queue per served model and priority level, jobs enqueued by
dotted string with the JSON serializer, so the API never imports the worker's code (or torch).

A worker reads its model's queues in PRIORITIES order (rq's way: BLPOP over the keys in
order), so a `high` job goes before every `normal` one and a `normal` before every `low`.
The `normal` queue keeps the model's plain name (`videopoet-<model>`)."""

from __future__ import annotations

import contextlib
import re
import time

from redis import Redis
from rq import Queue, Retry
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer

# The job function, resolved by the worker; the API only names it.
RUN_VIDEO = "workers.jobs.run_video"
WORKERS_KEY = "videopoet:workers:{}"  # zset: worker name -> last seen (unix seconds)
WORKER_INFO_KEY = "videopoet:worker:{}"  # hash: a worker's model, pid, host, metrics port
# A worker that has not reported for this long is not counted as live.
WORKER_STALE_SECONDS = 15


# Priority levels, in the order a worker reads their queues.
PRIORITIES = ("high", "normal", "low")
DEFAULT_PRIORITY = "normal"


def queue_name(model_name: str, priority: str = DEFAULT_PRIORITY) -> str:
    """Jobs for one model go to that model's queues, so a worker never gets another's jobs;
    one queue per priority level, `normal` under the model's plain name. (":" never appears in
    a sanitised model name, so no level's queue is another model's.)"""
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}; got {priority!r}")
    base = "videopoet-" + re.sub(r"[^A-Za-z0-9_.-]", "_", model_name)
    return base if priority == DEFAULT_PRIORITY else f"{base}:{priority}"


def queue_names(model_name: str) -> list[str]:
    """The model's queues in the order a worker reads them: high, normal, low."""
    return [queue_name(model_name, level) for level in PRIORITIES]


class JobQueue:
    """Enqueue, cancel, place and count the jobs of one model's queues (every level)."""

    def __init__(self, connection: Redis, model_name: str):
        # RQ wants a client that returns bytes (decode_responses=False).
        self.connection = connection
        self.name = queue_name(model_name)  # the normal level's: what names the model's workers
        self.levels = {
            level: Queue(
                queue_name(model_name, level), connection=connection, serializer=JSONSerializer
            )
            for level in PRIORITIES
        }
        self.queue = self.levels[DEFAULT_PRIORITY]

    def enqueue(
        self,
        video_id: str,
        *,
        timeout: int,
        retries: int,
        keep_seconds: int,
        priority: str = DEFAULT_PRIORITY,
    ) -> None:
        """One job per video, id = video id, on its priority's queue; `retries` re-runs if its
        worker dies (on the same queue)."""
        queue = self.levels[priority] if priority in self.levels else self.queue
        queue.enqueue_call(
            func=RUN_VIDEO,
            args=(video_id,),
            job_id=video_id,
            timeout=timeout,
            retry=Retry(max=retries) if retries > 0 else None,
            result_ttl=keep_seconds,
            failure_ttl=keep_seconds,
            description=f"video {video_id}",
        )

    def cancel(self, video_id: str) -> None:
        """Take a queued job off the queue; a running one stops on its record's status."""
        try:
            job = Job.fetch(video_id, connection=self.connection, serializer=JSONSerializer)
        except NoSuchJobError:
            return
        if job.get_status() in ("queued", "deferred", "scheduled"):
            # It may have started or finished meanwhile: the worker then sees the status.
            with contextlib.suppress(InvalidJobOperation):
                job.cancel()

    def depth(self) -> int:
        """Jobs waiting (not running), at every level."""
        with self.connection.pipeline() as pipe:
            for queue in self.levels.values():
                pipe.llen(queue.key)
            return sum(int(n) for n in pipe.execute())

    def running(self) -> int:
        return sum(
            queue.started_job_registry.get_job_count(cleanup=False)
            for queue in self.levels.values()
        )

    def positions(self, videos: list[tuple[str, str]]) -> dict[str, int]:
        """Where each queued (video id, priority) stands in the order workers take jobs (0:
        next): every job of a higher level, then those ahead of it on its own. A job that is
        on no list (a worker is taking it) is at 0."""
        if not videos:
            return {}
        with self.connection.pipeline() as pipe:
            for queue in self.levels.values():
                pipe.llen(queue.key)
            for video_id, priority in videos:
                pipe.lpos(self.levels.get(priority, self.queue).key, video_id)
            replies = pipe.execute()
        lengths = dict(zip(self.levels, (int(n) for n in replies[: len(self.levels)])))
        found: dict[str, int] = {}
        for (video_id, priority), index in zip(videos, replies[len(self.levels) :]):
            level = priority if priority in self.levels else DEFAULT_PRIORITY
            ahead = sum(lengths[p] for p in PRIORITIES[: PRIORITIES.index(level)])
            found[video_id] = ahead + int(index) if index is not None else 0
        return found

    def live_workers(self) -> int:
        """Workers on this queue that reported within WORKER_STALE_SECONDS."""
        return int(
            self.connection.zcount(
                WORKERS_KEY.format(self.name), time.time() - WORKER_STALE_SECONDS, "+inf"
            )
        )

    def live_workers_elsewhere(self) -> list[str]:
        """Queues (models) that have live workers, for a readiness message."""
        names = []
        for key in self.connection.scan_iter(match=WORKERS_KEY.format("*"), count=100):
            key = key.decode() if isinstance(key, bytes) else key
            if self.connection.zcount(key, time.time() - WORKER_STALE_SECONDS, "+inf"):
                names.append(key.rsplit(":", 1)[-1])
        return names
