"""The RQ side of the API: one queue per served model, jobs enqueued by dotted string with the
JSON serializer, so the API never imports the worker's code (or torch)."""

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


def queue_name(model_name: str) -> str:
    """Jobs for one model go to that model's queue, so a worker never gets another's jobs."""
    return "videopoet-" + re.sub(r"[^A-Za-z0-9_.-]", "_", model_name)


class JobQueue:
    """Enqueue, cancel and count the jobs of one model's queue."""

    def __init__(self, connection: Redis, model_name: str):
        # RQ wants a client that returns bytes (decode_responses=False).
        self.connection = connection
        self.name = queue_name(model_name)
        self.queue = Queue(self.name, connection=connection, serializer=JSONSerializer)

    def enqueue(self, video_id: str, *, timeout: int, retries: int, keep_seconds: int) -> None:
        """One job per video, id = video id; `retries` re-runs if its worker dies."""
        self.queue.enqueue_call(
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
        """Jobs waiting (not running)."""
        return len(self.queue)

    def running(self) -> int:
        return self.queue.started_job_registry.get_job_count(cleanup=False)

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
