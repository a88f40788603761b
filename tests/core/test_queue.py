"""Priority levels: one queue per model and level, read high, normal, low; the normal queue
keeps the model's plain name; depth counts every level; a queued job's position counts every
job of a higher level before those ahead of it on its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from core.queue import PRIORITIES, JobQueue, queue_name, queue_names


@pytest.fixture
def connection(redis: Redis, redis_url: str) -> Iterator[Redis]:
    """A bytes client (what rq wants) on the Redis the `redis` fixture flushed."""
    client = Redis.from_url(redis_url)
    yield client
    client.close()


# A model no worker of the test session serves: its queues are this test's alone.
UNSERVED = "queue-test-unserved"


def _enqueue(queue: JobQueue, video_id: str, priority: str) -> None:
    queue.enqueue(video_id, timeout=60, retries=0, keep_seconds=60, priority=priority)


def test_the_normal_level_keeps_the_model_s_queue_name() -> None:
    assert queue_name("tiny") == queue_name("tiny", "normal") == "videopoet-tiny"
    assert queue_names("tiny") == ["videopoet-tiny:high", "videopoet-tiny", "videopoet-tiny:low"]
    # no level of one model is another model's queue (":" never survives sanitising)
    assert queue_name("tiny:high") == "videopoet-tiny_high" != queue_name("tiny", "high")
    with pytest.raises(ValueError, match="high, normal, low"):
        queue_name("tiny", "urgent")


def test_positions_count_every_higher_level_first(connection: Redis) -> None:
    queue = JobQueue(connection, UNSERVED)
    for i in range(3):
        _enqueue(queue, f"n{i}", "normal")
    _enqueue(queue, "l0", "low")
    _enqueue(queue, "h0", "high")
    _enqueue(queue, "h1", "high")
    wanted = [("n0", "normal"), ("n2", "normal"), ("l0", "low"), ("h0", "high"), ("h1", "high")]
    assert queue.positions(wanted) == {"h0": 0, "h1": 1, "n0": 2, "n2": 4, "l0": 5}
    assert queue.depth() == 6
    # one a worker is taking (on no list any more) is next
    assert queue.positions([("gone", "normal")]) == {"gone": 0}
    assert queue.positions([]) == {}


def test_a_worker_reads_the_levels_in_order(connection: Redis) -> None:
    queue = JobQueue(connection, UNSERVED)
    _enqueue(queue, "low", "low")
    _enqueue(queue, "normal", "normal")
    _enqueue(queue, "high", "high")
    levels = [
        Queue(name, connection=connection, serializer=JSONSerializer)
        for name in queue_names(UNSERVED)
    ]
    order = []
    for _ in PRIORITIES:
        dequeued = Queue.dequeue_any(levels, None, connection=connection, serializer=JSONSerializer)
        assert dequeued is not None
        order.append(dequeued[0].id)
    assert order == ["high", "normal", "low"]


def test_cancel_takes_a_job_off_any_level(connection: Redis) -> None:
    queue = JobQueue(connection, UNSERVED)
    _enqueue(queue, "h0", "high")
    _enqueue(queue, "l0", "low")
    queue.cancel("h0")
    queue.cancel("l0")
    assert queue.depth() == 0
    job = Job.fetch("l0", connection=connection, serializer=JSONSerializer)
    assert job.get_status() == "canceled"
