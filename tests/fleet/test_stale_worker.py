"""A worker that comes back after its job was taken from it (found abandoned while it could not
reach Redis, and run again elsewhere) repeats nothing: it neither finishes the video nor the
RQ job a second time. On one machine, without namespaces: the worker is frozen (SIGSTOP) for
longer than VIDEOPOET_WORKER_LOST_SECONDS, which is what a cut link looks like to Redis, and
thawed (SIGCONT) while the other worker runs the job again. tests/fleet/test_hosts.py cuts a
real link between hosts.
"""

from __future__ import annotations

import signal
from pathlib import Path

from redis import Redis
from rq.job import Job
from rq.results import Result
from rq.serializers import JSONSerializer

import time

from core.store import Store, VideoStatus
from tests.conftest import SAMPLING_STAGES, Service, wait_for
from core.store import VideoRecord, new_video_id
from models.spec import Task, TaskSpec


def _record() -> VideoRecord:
    spec = TaskSpec(task=Task.text_to_video, prompt="a ball", seed=1)
    return VideoRecord(
        id=new_video_id(),
        model="tiny",
        created_at=int(time.time()),
        seconds="2.125",
        size="32x32",
        prompt="a ball",
        task=spec.task,
        spec=spec,
    )


def test_a_write_that_expects_a_claim_is_refused_once_another_run_claimed(
    redis: Redis, tmp_path: Path
) -> None:
    store = Store(redis, tmp_path)
    record = _record()
    store.create(record)
    mine = {"attempts": 1}
    assert (
        store.update(record.id, expect={"attempts": 0}, status=VideoStatus.in_progress, attempts=1)
        == 1
    )
    assert store.update(record.id, expect={"attempts": 0}, attempts=1) == -2  # claimed already
    assert store.update(record.id, expect=mine, progress=40) == 1
    # another run claims it (the first one's worker was found lost)
    assert store.update(record.id, expect=mine, attempts=2, worker="other") == 1
    finished = []
    store.on_finish = finished.append
    done = store.finish(
        record.id, VideoStatus.completed, only_if=frozenset({VideoStatus.in_progress}), expect=mine
    )
    assert done == -2 and finished == []
    assert store.get(record.id).status is VideoStatus.in_progress  # type: ignore[union-attr]
    assert store.update("video_" + "0" * 32, expect=mine, progress=1) == -1


def test_a_worker_back_after_its_job_ran_again_elsewhere_repeats_nothing(
    service: Service, redis_url: str
) -> None:
    pool = service.workers
    extra = pool.start()
    pool.wait_ready(extra)
    stale = None
    try:
        response = service.http.post(
            "/v1/videos", json={"prompt": "[slow] taken over", "task": "text_to_video", "seed": 3}
        )
        assert response.status_code == 200, response.text
        video = response.json()["id"]

        def sampling() -> str | None:
            record = service.record(video)
            return record.worker if record.stage in SAMPLING_STAGES else None

        stale = wait_for(sampling, 60, "sampling to start")
        pool.procs[stale].send_signal(signal.SIGSTOP)  # cut off: no heartbeat, no progress

        def rerun() -> bool:
            record = service.record(video)
            return record.attempts == 2 and record.stage in SAMPLING_STAGES

        wait_for(rerun, 60, "the job to run again on the other worker", interval=0.1)
        pool.procs[stale].send_signal(signal.SIGCONT)  # back, while the new run samples

        record = service.wait_status(video, {VideoStatus.completed, VideoStatus.failed})
        assert record.status is VideoStatus.completed, record.error
        assert record.attempts == 2 and record.worker != stale
        wait_for(
            lambda: "not finishing it here" in pool.log(stale),
            30,
            "the thawed worker to drop its run",
        )
        assert f"video {video} was taken from this worker" in pool.log(stale)
        job = Job.fetch(video, connection=Redis.from_url(redis_url), serializer=JSONSerializer)
        # rq records the new run's end just after the record completes: wait for it
        wait_for(lambda: job.get_status(refresh=True) == "finished", 15, "rq to finish the new run")
        results = Result.all(job, serializer=JSONSerializer)
        assert [r.type for r in results] == [Result.Type.SUCCESSFUL]
        assert service.record(video) == record  # nothing written after it completed
    except BaseException:
        for name in {extra, stale} - {None}:
            print(f"--- worker {name}:\n{pool.log(name)[-20000:]}")  # shown with the failure
        raise
    finally:
        if stale is not None and pool.procs[stale].poll() is None:
            pool.procs[stale].send_signal(signal.SIGCONT)
        proc = pool.procs[extra]
        if proc.poll() is None:
            proc.kill()
            proc.wait()
