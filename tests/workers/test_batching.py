"""Batches: compatible jobs queued together are sampled in one pipeline call by one worker, and
each job of a batch is still a job of its own: its output is what it gives alone, its cancel
stops it alone, its failure fails it alone, and a killed worker's whole batch runs again."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from redis import Redis
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from core.store import VideoRecord, VideoStatus
from models.card import BUILTIN_CARDS
from models.spec import Task, TaskSpec
from tests.conftest import Service, wait_for
from tests.workers.faulty_pipeline import RAISE_MESSAGE
from models import media
from workers.batching import batch_key

DONE = {VideoStatus.completed, VideoStatus.failed, VideoStatus.cancelled}


def _create(service: Service, prompt: str, task: str = "text_to_image", **fields: object) -> str:
    response = service.http.post("/v1/videos", json={"prompt": prompt, "task": task, **fields})
    assert response.status_code == 200, response.text
    return response.json()["id"]


def _create_from_image(service: Service, prompt: str, image: Path) -> str:
    response = service.http.post(
        "/v1/videos",
        data={"prompt": prompt, "seed": "5"},
        files={"input_reference": ("image.png", image.read_bytes(), "image/png")},
    )
    assert response.status_code == 200, response.text
    return response.json()["id"]


def _sampling(service: Service, video_id: str) -> bool:
    record = service.record(video_id)
    return record.status is VideoStatus.in_progress and record.progress > 5


def _one_worker(service: Service) -> str:
    """The single live worker (batches are one worker's; a second would take jobs too)."""
    pool = service.workers
    first, *others = pool.alive() or [pool.ensure()]
    for name in others:
        pool.procs[name].send_signal(signal.SIGTERM)
        pool.procs[name].wait(timeout=60)
    return first


@pytest.fixture(params=["continuous", "static"])
def scheduler(request: pytest.FixtureRequest, service: Service) -> Iterator[str]:
    """Each batching test runs on a worker of each scheduler (VIDEOPOET_SCHEDULER): the
    session's default worker is continuous; a static one replaces it for the test."""
    pool = service.workers
    if request.param == "continuous":
        yield request.param
        return
    for name in pool.alive():
        pool.procs[name].send_signal(signal.SIGTERM)
        pool.procs[name].wait(timeout=60)
    name = pool.start(VIDEOPOET_SCHEDULER="static")
    pool.wait_ready(name)
    yield request.param
    for name in pool.alive():  # the next tests get the default worker back
        pool.procs[name].send_signal(signal.SIGTERM)
        pool.procs[name].wait(timeout=60)


@contextmanager
def _queued_together(service: Service) -> Iterator[None]:
    """Jobs created inside queue up behind a running job; leaving cancels that job, so the
    worker's next dequeue finds them all queued."""
    _one_worker(service)
    blocker = _create(service, "[slow] blocker", task="text_to_video")
    wait_for(lambda: _sampling(service, blocker), 60, "the blocker to start sampling")
    yield
    assert service.http.post(f"/v1/videos/{blocker}/cancel").json()["status"] == "cancelled"


def _image(service: Service, record: VideoRecord) -> np.ndarray:
    return media.decode_image(service.store.path(record.id, record.outputs["image"]))


def test_a_batched_job_gives_what_it_gives_alone(service: Service, scheduler: str) -> None:
    requests = [
        {"prompt": "a red dot", "seed": 1},
        {"prompt": "a blue square", "seed": 2, "top_k": 5},
        {"prompt": "a green line", "seed": 3, "temperature": 0.7, "top_p": 0.9},
    ]
    alone = []
    for fields in requests:
        record = service.wait_status(_create(service, **fields), DONE)  # type: ignore[arg-type]
        assert record.status is VideoStatus.completed and record.batch_size == 1
        alone.append(_image(service, record))

    with _queued_together(service):
        ids = [_create(service, **fields) for fields in requests]  # type: ignore[arg-type]
    together = [service.wait_status(video_id, DONE) for video_id in ids]
    assert [r.status for r in together] == [VideoStatus.completed] * 3
    assert [r.batch_size for r in together] == [3, 3, 3]
    for expected, record in zip(alone, together):  # the same tokens; pixels within one level
        image = _image(service, record).astype(np.int16)
        assert np.abs(image - expected.astype(np.int16)).max() <= 1


def test_a_job_that_joins_a_running_batch_gets_its_solo_tokens(service: Service) -> None:
    """Continuous scheduler: a job created while another samples joins its running batch at
    the next step (it does not wait for the batch to end) and gets what it gets alone."""
    _one_worker(service)
    fields = {"prompt": "a blue square", "seed": 7, "top_k": 9}
    alone = service.wait_status(_create(service, **fields), DONE)  # type: ignore[arg-type]
    assert alone.status is VideoStatus.completed and alone.batch_size == 1

    running = _create(service, "[slow] already sampling", seed=3)
    wait_for(lambda: _sampling(service, running), 60, "the first job to sample")
    joiner = service.wait_status(_create(service, **fields), DONE)  # type: ignore[arg-type]
    first = service.wait_status(running, DONE)
    assert joiner.status is VideoStatus.completed and first.status is VideoStatus.completed
    assert joiner.batch_size == 2 and joiner.worker == first.worker
    # it ran beside the first job: started before that one completed (a static batch would
    # have made it wait for the whole batch)
    assert joiner.started_at is not None and first.completed_at is not None
    assert joiner.started_at < first.completed_at
    # the same tokens as alone: it decodes alone too (the rows finish at different steps)
    np.testing.assert_array_equal(_image(service, joiner), _image(service, alone))


def test_cancelling_one_job_of_a_batch_stops_only_that_job(
    service: Service, scheduler: str
) -> None:
    with _queued_together(service):
        ids = [_create(service, f"[slow] row {i}") for i in range(3)]
    wait_for(lambda: all(_sampling(service, v) for v in ids), 60, "the batch to sample")
    assert service.http.post(f"/v1/videos/{ids[1]}/cancel").json()["status"] == "cancelled"

    first, cancelled, last = (service.wait_status(v, DONE) for v in ids)
    assert cancelled.status is VideoStatus.cancelled and not cancelled.outputs
    # the worker lets it go; it writes that when it reaches the row, after the batch's first job
    # may already have completed, so wait for it rather than read it once
    wait_for(lambda: service.record(ids[1]).stopped_at is not None, 30, "the worker to let it go")
    for record in (first, last):
        assert record.status is VideoStatus.completed, record.error
        assert record.batch_size == 3
        assert _image(service, record).shape == (32, 32, 3)


def test_a_failing_row_fails_only_its_job(
    service: Service, scheduler: str, image_png: Path, redis_url: str
) -> None:
    with _queued_together(service):
        ok = _create_from_image(service, "it moves", image_png)
        model_fails = _create_from_image(service, "[raise] it moves", image_png)
        input_fails = _create_from_image(service, "it moves", image_png)
        output_fails = _create_from_image(service, "[bad-output] it moves", image_png)
        also_ok = _create_from_image(service, "it moves on", image_png)
        # Its stored input goes bad after it was accepted (a disk or storage fault).
        stored = service.record(input_fails).inputs["image"]
        service.store.path(input_fails, stored).write_bytes(b"no longer an image")

    ids = [ok, model_fails, input_fails, output_fails, also_ok]
    records = {v: service.wait_status(v, DONE) for v in ids}
    assert {r.batch_size for r in records.values()} == {5}
    for video_id in (ok, also_ok):
        assert records[video_id].status is VideoStatus.completed, records[video_id].error
        assert service.store.path(video_id, records[video_id].outputs["video"]).is_file()
    failed = {v: records[v].error for v in (model_fails, input_fails, output_fails)}
    assert all(records[v].status is VideoStatus.failed for v in failed)
    assert failed[model_fails].code == "generation_error"
    assert RAISE_MESSAGE in failed[model_fails].message
    assert failed[input_fails].code == "invalid_input"
    assert failed[output_fails].code == "generation_error"

    # rq's own bookkeeping follows each job's outcome: an operator's rq tooling sees the same.
    connection = Redis.from_url(redis_url)  # rq reads bytes
    jobs = {v: Job.fetch(v, connection=connection, serializer=JSONSerializer) for v in ids}
    wait_for(
        lambda: all(j.get_status(refresh=True) in ("finished", "failed") for j in jobs.values()),
        30,
        "rq to record the batch's outcomes",
    )
    for video_id in (ok, also_ok):
        assert jobs[video_id].get_status() == "finished"
        outputs = records[video_id].outputs
        assert jobs[video_id].return_value() == {"status": "completed", "outputs": outputs}
    for video_id in failed:
        assert jobs[video_id].get_status() == "failed"
        result = jobs[video_id].latest_result()
        assert result is not None and result.exc_string
    assert RAISE_MESSAGE in (jobs[model_fails].latest_result().exc_string or "")
    started = StartedJobRegistry(jobs[ok].origin, connection=connection)
    assert not set(ids) & set(started.get_job_ids())


def test_a_sigkilled_worker_s_whole_batch_runs_again(service: Service, scheduler: str) -> None:
    pool = service.workers
    with _queued_together(service):
        victim = pool.alive()[0]
        # Each hangs on its first run (until the kill) and runs normally after.
        ids = [_create(service, f"[hang-once] {uuid.uuid4().hex} row {i}") for i in range(3)]

    def all_running() -> bool:
        records = [service.record(v) for v in ids]
        return all(r.status is VideoStatus.in_progress and r.worker == victim for r in records)

    wait_for(all_running, 60, "the batch to start")
    assert {service.record(v).batch_size for v in ids} == {3}
    rescuer = pool.start()
    pool.wait_ready(rescuer)
    pool.procs[victim].send_signal(signal.SIGKILL)
    pool.procs[victim].wait()

    for video_id in ids:
        done = service.wait_status(video_id, DONE, timeout=90)
        assert done.status is VideoStatus.completed, done.error
        assert done.worker == rescuer and done.attempts == 2


CARD = BUILTIN_CARDS["tiny"]


def _key(task: Task, timeout: int = 300, input_seconds: float | None = None, **spec: object):
    record = VideoRecord(
        id="video_" + "0" * 32,
        model="tiny",
        created_at=0,
        seconds="2",
        size="32x32",
        task=task,
        spec=TaskSpec(task=task, **spec),  # type: ignore[arg-type]
        input_seconds=input_seconds,
    )
    return batch_key(record, CARD, timeout)


@pytest.mark.parametrize(
    ("a", "b", "together"),
    [
        (dict(prompt="a", seed=1), dict(prompt="b", seed=2, top_k=5, temperature=0.5), True),
        (dict(prompt="a"), dict(prompt="a", seconds=4), False),  # other length
        (dict(prompt="a"), dict(prompt="a", with_audio=True), False),
        (dict(prompt="a"), dict(prompt="a", guidance_scale=3.0), False),  # doubled rows
        (dict(prompt="a", guidance_scale=2.0), dict(prompt="a", guidance_scale=5.0), True),
        (dict(prompt="a"), dict(prompt="a", timeout=60), False),  # one deadline per batch
    ],
)
def test_batch_key_groups_what_samples_together(a: dict, b: dict, together: bool) -> None:
    assert (_key(Task.text_to_video, **a) == _key(Task.text_to_video, **b)) is together


def test_batch_key_of_a_continuation_follows_its_input_length() -> None:
    three = _key(Task.continuation, input_seconds=3.0)
    assert three == _key(Task.continuation, input_seconds=3.0)
    assert three != _key(Task.continuation, input_seconds=2.0)
    # a task whose output does not keep the input batches whatever the input length
    assert _key(Task.stylize, input_seconds=3.0, prompt="x") == _key(
        Task.stylize, input_seconds=9.0, prompt="x"
    )
    assert _key(Task.text_to_image, prompt="x") != _key(Task.text_to_video, prompt="x")
