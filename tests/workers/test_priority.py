"""Priority on a worker: it takes high before normal before low, and a batch never carries a
job past a waiting one of a higher level (companions come from the job's level and above)."""

from __future__ import annotations

import signal

from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from core.queue import JobQueue, queue_name, queue_names
from core.store import Store, VideoRecord, VideoStatus, new_video_id
from models.card import BUILTIN_CARDS
from models.spec import Task, TaskSpec
from tests.conftest import Service, wait_for
from workers.batching import Batcher

DONE = {VideoStatus.completed, VideoStatus.failed, VideoStatus.cancelled}
CARD = BUILTIN_CARDS["tiny"]
# A model no worker of the session serves, so no live worker takes these jobs first.
UNSERVED = "priority-unserved"


def _queued(store: Store, queue: JobQueue, priority: str, prompt: str = "x") -> str:
    video_id = new_video_id()
    spec = TaskSpec(task=Task.text_to_image, prompt=prompt, seed=1)
    store.create(
        VideoRecord(
            id=video_id,
            model=UNSERVED,
            created_at=0,
            seconds="0.125",
            size="32x32",
            task=spec.task,
            spec=spec,
            priority=priority,
        )
    )
    queue.enqueue(video_id, timeout=300, retries=0, keep_seconds=60, priority=priority)
    return video_id


def test_companions_come_from_the_job_s_level_and_above(redis: Redis, redis_url: str) -> None:
    connection = Redis.from_url(redis_url)
    store = Store(redis, "/nonexistent")
    queue = JobQueue(connection, UNSERVED)
    first = _queued(store, queue, "normal")
    low = _queued(store, queue, "low")
    normal = _queued(store, queue, "normal")
    high = _queued(store, queue, "high")
    batcher = Batcher(
        connection,
        store,
        CARD,
        size=8,
        window_seconds=0.0,
        serializer=JSONSerializer,
        levels=queue_names(UNSERVED),
    )
    normal_level = Queue(queue_name(UNSERVED), connection=connection, serializer=JSONSerializer)
    job, _ = Queue.dequeue_any([normal_level], None, connection, serializer=JSONSerializer)  # type: ignore[misc]
    assert job.id == first

    taken = batcher.companions(job, normal_level, stop=lambda: False)
    assert [j.id for j in taken] == [high, normal]  # the higher level first; never the low one
    assert queue.positions([(low, "low")]) == {low: 0}  # it waits, next in line
    connection.close()


def _create(service: Service, prompt: str, **fields: object) -> str:
    body = {"prompt": prompt, "task": "text_to_image", **fields}
    response = service.http.post("/v1/videos", json=body)
    assert response.status_code == 200, response.text
    return response.json()["id"]


def test_a_high_job_behind_six_normal_ones_runs_first(service: Service) -> None:
    pool = service.workers
    first, *others = pool.alive() or [pool.ensure()]
    for name in others:  # one worker, so "first" means first
        pool.procs[name].send_signal(signal.SIGTERM)
        pool.procs[name].wait(timeout=60)
    blocker = _create(service, "[slow] keeps the worker busy", task="text_to_video")

    def sampling() -> bool:
        record = service.record(blocker)
        return record.status is VideoStatus.in_progress and record.progress > 5

    wait_for(sampling, 60, "the blocker to start sampling")
    normal = [_create(service, f"normal {i}", seed=i) for i in range(6)]
    high = _create(service, "high", seed=9, priority="high")
    assert service.http.get(f"/v1/videos/{high}").json()["queue_position"] == 0
    assert service.http.get(f"/v1/videos/{normal[0]}").json()["queue_position"] == 1
    assert service.http.post(f"/v1/videos/{blocker}/cancel").json()["status"] == "cancelled"

    first_done = service.wait_status(high, DONE)
    rest = [service.wait_status(video_id, DONE) for video_id in normal]
    assert first_done.status is VideoStatus.completed, first_done.error
    assert all(r.status is VideoStatus.completed for r in rest)
    # it ran alone (no normal job rode along) and before every normal one started
    assert first_done.batch_size == 1
    assert first_done.started_at is not None
    assert all(r.started_at is not None and r.started_at > first_done.started_at for r in rest)
    assert all(
        r.completed_at is not None and r.completed_at >= first_done.completed_at for r in rest
    )  # type: ignore[operator]
