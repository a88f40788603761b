"""The worker process: load the pipeline once, then take jobs from RQ in this same process.

RQ's default worker forks a child per job, which would reload the model and cannot carry a
CUDA context; `VideoWorker` is a `SimpleWorker` (jobs run in-process) that also heartbeats
while a job runs, so a worker killed mid-job is noticed within `worker_lost_seconds` and its
job re-run by a live worker (RQ's StartedJobRegistry cleanup + the job's `Retry`).

Batches: having dequeued a job, the worker takes the queued jobs that can share its sampling
batch (workers/batching.py, up to VIDEOPOET_BATCH_SIZE within VIDEOPOET_BATCH_WINDOW_SECONDS)
and runs them in one pipeline call. Each job of a batch is an RQ execution of its own, as if it
ran alone: in the StartedJobRegistry, heartbeated, finished (or failed) on its own; a worker
killed mid-batch leaves every job of it to be found abandoned and re-run.

Lifecycle: SIGTERM/SIGINT -> finish the current batch, then exit (a second one: exit now).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from prometheus_client import start_http_server
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq.exceptions import AbandonedJobError
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException
from rq.utils import now
from rq.worker import SimpleWorker, WorkerStatus

from core.artifacts import open_artifacts
from core.config import Settings, get_settings
from core.queue import RUN_VIDEO, WORKER_INFO_KEY, WORKERS_KEY, queue_name, queue_names
from core.store import Store, VideoError, VideoStatus
from core.webhooks import WebhookQueue
from workers import jobs, metrics, runtime
from workers.batching import Batcher
from workers.continuous import ContinuousRun, continuous_key

logger = logging.getLogger(__name__)

# How often a worker tells Redis it is alive (readiness counts it for WORKER_STALE_SECONDS).
BEACON_SECONDS = 3.0


class JobHeartbeat:
    """While jobs run in the main thread, keep their StartedJobRegistry entries fresh.

    `running` is the batch's (job, execution) pairs; the main thread adds the jobs it takes
    and removes those it finishes, the thread beats for whatever is there.
    """

    def __init__(self, worker: VideoWorker, running: list[tuple[Job, Execution]]):
        self.worker, self.running = worker, running
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def __enter__(self) -> JobHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.worker.job_monitoring_interval):
            for job, execution in list(self.running):
                try:
                    self.worker.maintain_heartbeats(job, execution)
                except Exception:  # Redis away for a moment: try again next beat
                    logger.warning("heartbeat for job %s failed", job.id, exc_info=True)


class VideoWorker(SimpleWorker):
    """Runs jobs in-process (model stays loaded) in batches of compatible jobs, heartbeating
    every job while they run."""

    def __init__(
        self,
        *args: Any,
        worker_lost_seconds: int,
        batcher: Batcher | None = None,
        continuous: bool = False,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.worker_lost_seconds = worker_lost_seconds
        self.batcher = batcher
        # VIDEOPOET_SCHEDULER=continuous with a pipeline that has running batches
        self.continuous = continuous and batcher is not None
        self.stopping = False  # set by request_stop
        for queue in self.queues:
            if isinstance(queue, VideoQueue):
                queue.maintenance_lock_seconds = max(1, int(self.maintenance_interval))

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        # The registry entry expires this long after the last heartbeat: the time a dead
        # worker's job waits before it is re-run (the job's own timeout is separate).
        return self.worker_lost_seconds

    def execute_job(self, job: Job, queue: Queue) -> None:
        if job.func_name != RUN_VIDEO:  # not ours: RQ's own way, alone
            execution = self.prepare_execution(job)
            with JobHeartbeat(self, [(job, execution)]):
                self.perform_job(job, queue, execution)
            self.set_state(WorkerStatus.IDLE)
            return
        # Busy from here: a SIGTERM now lets this batch finish (and take no more jobs).
        self.set_state(WorkerStatus.BUSY)
        if self.continuous and self.batcher is not None:
            key = continuous_key(self.batcher, job)
            if key is not None:
                ContinuousRun(self, self.batcher, queue, key).perform(job)
                self.set_state(WorkerStatus.IDLE)
                return
        running: list[tuple[Job, Execution]] = []
        with JobHeartbeat(self, running):
            running.append((job, self.start_execution(job)))
            if self.batcher is not None:
                try:
                    companions = self.batcher.companions(job, queue, stop=lambda: self.stopping)
                except Exception:  # Redis away for a moment: run the first job alone
                    logger.warning(
                        "could not look for jobs to batch with %s", job.id, exc_info=True
                    )
                    companions = []
                for companion in companions:
                    running.append((companion, self.start_execution(companion)))
            metrics.BATCH_SIZE.observe(len(running))
            self.perform_batch(running, queue)
        self.set_state(WorkerStatus.IDLE)

    def start_execution(self, job: Job) -> Execution:
        """Register a job this worker took as started (what perform_job does before running
        it), right away: from here a killed worker's job is found abandoned and re-run."""
        execution = self.prepare_execution(job)
        self.prepare_job_execution(job, remove_from_intermediate_queue=True)
        job.started_at = now()
        return execution

    def perform_batch(self, running: list[tuple[Job, Execution]], queue: Queue) -> None:
        """Run the jobs in one pipeline call (workers.jobs.run_videos) under their timeout,
        then let RQ finish each job's execution with its own outcome: rq's `perform_job` runs
        the job function, which hands back the outcome the batch left for it."""
        first = running[0][0]
        timeout = first.timeout or queue.DEFAULT_TIMEOUT  # equal across a batch (batch_key)
        video_ids = [str(job.args[0]) for job, _ in running]
        queued = [job.enqueued_at.timestamp() if job.enqueued_at else None for job, _ in running]
        try:
            with self.death_penalty_class(timeout, JobTimeoutException, job_id=first.id):
                outcomes = jobs.run_videos(video_ids, enqueued_at=queued, timeout=timeout)
        except Exception as exc:  # run_videos ends its records itself; this is what is left
            logger.exception("batch of %d failed outside its jobs", len(running))
            outcomes = [exc] * len(running)
        for (job, execution), outcome in zip(list(running), outcomes):
            running.remove((job, execution))
            self.finish_in_rq(job, execution, queue, outcome)

    def finish_in_rq(self, job: Job, execution: Execution, queue: Queue, outcome: Any) -> None:
        """Let rq finish the job's execution with the outcome its batch left for it: rq's
        `perform_job` runs the job function, which hands the outcome back."""
        try:
            origin = self.origin_queue(job, queue)
            if not self.still_runs(job, execution, origin, outcome):
                return
            with jobs.handed_over(str(job.args[0]), outcome):
                # its own queue (a companion may come from a higher level): rq finishes it
                # in that queue's registries
                self.perform_job(job, origin, execution)
        except Exception:  # one job's bookkeeping must not cost the others theirs
            logger.exception("could not finish job %s in RQ", job.id)

    def still_runs(self, job: Job, execution: Execution, queue: Queue, outcome: Any) -> bool:
        """Whether this execution of `job` is still the job's, to be finished in RQ.

        A worker cut off from Redis for longer than worker_lost_seconds has its executions
        found abandoned by a live worker: their StartedJobRegistry entries removed and the
        jobs queued again (or failed, out of retries). Back on the network, it must not finish
        such a job a second time (rq would set the status and add a result over the new run's):
        it drops what is left of its execution and leaves the job to its new run. Waits for
        Redis while it cannot be reached.
        """
        registry = queue.started_job_registry
        delay = 0.5
        while True:
            try:
                entry = self.connection.zscore(registry.key, execution.composite_key)
                lost = isinstance(outcome, dict) and outcome.get("status") == jobs.LOST
                if entry is not None and not lost:
                    return True
                with self.connection.pipeline() as pipe:
                    execution.delete(job=job, pipeline=pipe)  # and its registry entries
                    pipe.execute()
                logger.warning(
                    "job %s was found abandoned while this worker could not reach Redis and "
                    "runs again elsewhere: not finishing it here",
                    job.id,
                )
                return False
            except (RedisConnectionError, RedisTimeoutError):
                logger.warning("Redis unreachable; finishing job %s when it is back", job.id)
                time.sleep(delay)
                delay = min(2 * delay, 10.0)

    def origin_queue(self, job: Job, dequeued_from: Queue) -> Queue:
        """The queue `job` was enqueued on (one of this worker's priority levels)."""
        if job.origin == dequeued_from.name:
            return dequeued_from
        for queue in self.queues:
            if queue.name == job.origin:
                return queue
        return self.queue_class(job.origin, connection=self.connection, serializer=self.serializer)

    def unsubscribe(self) -> None:
        """Stop rq's command listener without waiting for it.

        The listener thread sits in a read of up to 60 s on its pubsub connection, and
        rq's unsubscribe waited for it (redis-py 8's `stop()` joins the thread; closing the
        connection under the read waits too), so a stopping worker took up to a minute to
        exit. The listener is a daemon thread: it ends with this process, which exits next,
        and Redis drops the subscription with the connection."""
        if self.pubsub_thread:
            try:
                self.pubsub_thread.stop(timeout=0)  # clear its flag, do not join
            except TypeError:  # redis-py before 8: stop() only clears the flag
                self.pubsub_thread.stop()

    def request_stop(self, signum: int, frame: Any) -> None:
        """SIGTERM/SIGINT: RQ's warm shutdown; the batcher stops gathering at once too."""
        self.stopping = True
        super().request_stop(signum, frame)

    def handle_job_failure(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: Any = None,
        exc_string: str = "",
        execution: Execution | None = None,
    ) -> None:
        # A job that raised (or timed out) fails for good: running it again gives the same
        # error. Retries are for jobs whose worker died (see handle_lost_job).
        job.retries_left = 0
        super().handle_job_failure(
            job,
            queue,
            started_job_registry=started_job_registry,
            exc_string=exc_string,
            execution=execution,
        )


class VideoQueue(Queue):
    """RQ's queue whose maintenance lock lasts one maintenance interval (RQ's lasts 15
    minutes), so a worker killed while cleaning does not delay the next cleanup."""

    maintenance_lock_seconds = 60

    def acquire_maintenance_lock(self) -> bool:
        key = self.registry_cleaning_key
        return bool(self.connection.set(key, 1, nx=True, ex=self.maintenance_lock_seconds))


class LostJobHandler:
    """RQ exception handler: a job whose worker died goes back to `queued` (it will re-run)
    or, out of retries, to `failed` with a message that says so."""

    def __init__(self, store: Store):
        self.store = store

    def __call__(self, job: Job, exc_type: type, exc_value: BaseException, tb: Any) -> bool:
        if not (isinstance(exc_type, type) and issubclass(exc_type, AbandonedJobError)):
            return True
        active = frozenset({VideoStatus.in_progress, VideoStatus.queued})
        if job.retries_left and job.retries_left > 0:
            metrics.RETRIES.inc()
            self.store.update(
                job.id, only_if=active, status=VideoStatus.queued, progress=0, stage=None
            )
            logger.warning(
                "video %s: its worker stopped mid-job; re-queued (%d retries left)",
                job.id,
                job.retries_left - 1,
            )
        else:
            metrics.FAILURES.labels("worker_lost").inc()
            self.store.finish(
                job.id,
                VideoStatus.failed,
                only_if=active,
                stage=None,
                error=VideoError(
                    code="worker_lost",
                    message="the worker running this video stopped (killed, crashed or lost) "
                    "and no retries are left",
                ),
            )
            logger.error("video %s: its worker stopped mid-job and no retries are left", job.id)
        return True


class Beacon:
    """Tells Redis every few seconds that this worker is alive (for /readyz)."""

    def __init__(self, connection: Redis, queue: str, name: str, info: dict[str, str]):
        self.connection, self.queue, self.name, self.info = connection, queue, name, info
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="beacon", daemon=True)

    def start(self) -> None:
        self._beat()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.connection.zrem(WORKERS_KEY.format(self.queue), self.name)
            self.connection.delete(WORKER_INFO_KEY.format(self.name))
        except Exception:
            logger.warning("could not unregister worker %s", self.name, exc_info=True)

    def _beat(self) -> None:
        key = WORKERS_KEY.format(self.queue)
        with self.connection.pipeline() as pipe:
            pipe.zadd(key, {self.name: time.time()})
            pipe.zremrangebyscore(key, 0, time.time() - 3600)
            pipe.hset(WORKER_INFO_KEY.format(self.name), mapping=dict[Any, str](self.info))
            pipe.expire(WORKER_INFO_KEY.format(self.name), int(BEACON_SECONDS * 5))
            pipe.execute()

    def _run(self) -> None:
        while not self._stop.wait(BEACON_SECONDS):
            try:
                self._beat()
            except Exception:
                logger.warning("worker beacon failed", exc_info=True)


def run_worker(
    settings: Settings | None = None,
    *,
    name: str | None = None,
    metrics_port: int | None = None,
    burst: bool = False,
) -> None:
    """Load the pipeline, then work jobs until SIGTERM/SIGINT (or, with `burst`, until idle)."""
    settings = settings or get_settings()
    name = name or f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    records = Redis.from_url(settings.redis, decode_responses=True)
    connection = Redis.from_url(settings.redis)
    store = Store(records, open_artifacts(settings), retention_seconds=settings.retention_seconds)

    # every video this worker finishes (or gives up on) gets its webhook event queued
    store.on_finish = WebhookQueue.from_settings(connection, settings).video_finished
    pipeline, load_seconds = runtime.load_pipeline(settings)
    card = pipeline.card
    metrics.MODEL_LOAD_SECONDS.labels(card.name).observe(load_seconds)
    runtime.install(runtime.Runtime(settings, store, pipeline, name, load_seconds))

    port = settings.worker_metrics_port if metrics_port is None else metrics_port
    if port:
        try:
            start_http_server(port, addr=settings.worker_metrics_host)
            logger.info(
                "worker metrics on http://%s:%d/metrics", settings.worker_metrics_host, port
            )
        except OSError as exc:
            logger.warning("worker metrics not served: port %d: %s", port, exc)
            port = 0

    queue = queue_name(card.name)
    levels = queue_names(card.name)  # high, normal, low: rq reads them in this order
    batcher = Batcher(
        connection,
        store,
        card,
        size=settings.batch_size,
        window_seconds=settings.batch_window_seconds,
        serializer=JSONSerializer,
        levels=levels,
    )
    beacon = Beacon(
        records,
        queue,
        name,
        {
            "model": card.name,
            "pid": str(os.getpid()),
            "host": socket.gethostname(),
            "metrics_port": str(port),
        },
    )
    worker = VideoWorker(
        levels,
        connection=connection,
        name=name,
        serializer=JSONSerializer,
        queue_class=VideoQueue,
        worker_lost_seconds=settings.worker_lost_seconds,
        batcher=batcher if settings.batch_size > 1 else None,
        continuous=settings.scheduler == "continuous" and hasattr(pipeline, "continuous"),
        job_monitoring_interval=settings.heartbeat_seconds,
        maintenance_interval=settings.maintenance_interval_seconds,
        # Idle workers block on the queue for worker_ttl - 15 s: keep that at one
        # maintenance interval so abandoned jobs are found on time.
        worker_ttl=settings.maintenance_interval_seconds + 15,
        exception_handlers=[LostJobHandler(store)],
    )
    beacon.start()
    logger.info(
        "worker %s serving %s on queues %s (%s batches of up to %d)",
        name,
        card.name,
        ", ".join(levels),
        "continuous" if worker.continuous else "static",
        settings.batch_size,
    )
    try:
        worker.work(burst=burst, logging_level=settings.log_level.upper())
    finally:
        beacon.stop()
        logger.info("worker %s stopped", name)
