"""Nothing lost: failures, timeouts, cancels, a SIGKILLed worker and a SIGTERMed one, with a
real worker process (tiny model) behind the real API."""

from __future__ import annotations

import signal
import time
import uuid

from core.store import VideoStatus
from tests.conftest import Service, start_api, wait_for
from tests.workers.faulty_pipeline import RAISE_MESSAGE

DONE = {VideoStatus.completed, VideoStatus.failed, VideoStatus.cancelled}


def _create(
    service: Service, prompt: str, task: str = "text_to_image", base: str | None = None
) -> str:
    response = service.http.post(
        (base or service.url) + "/v1/videos", json={"prompt": prompt, "task": task}
    )
    assert response.status_code == 200, response.text
    return response.json()["id"]


def _sampling(service: Service, video_id: str) -> bool:
    record = service.record(video_id)
    return record.status is VideoStatus.in_progress and record.progress > 5


def test_a_raising_model_fails_the_job_and_the_worker_goes_on(service: Service) -> None:
    broken = _create(service, "[raise] anything")
    failed = service.wait_status(broken, DONE)
    assert failed.status is VideoStatus.failed
    assert failed.error is not None and failed.error.code == "generation_error"
    assert RAISE_MESSAGE in failed.error.message
    video = service.openai().videos.retrieve(broken)
    assert video.status == "failed" and RAISE_MESSAGE in video.error.message

    after = service.wait_status(_create(service, "a still"), DONE)
    assert after.status is VideoStatus.completed


def test_a_job_over_its_timeout_fails_and_the_worker_goes_on(service: Service, logs) -> None:
    # A second API on the same Redis, enqueueing with a 3 s job timeout.
    short = start_api(service.workers.env, logs, VIDEOPOET_JOB_TIMEOUT_SECONDS="3")
    try:
        hung = _create(service, "[hang] forever", base=short.url)
        started = time.monotonic()
        failed = service.wait_status(hung, DONE, timeout=60)
    finally:
        short.stop()
    assert failed.status is VideoStatus.failed and failed.error is not None
    assert failed.error.code == "timeout"
    assert "longer than the job timeout (3 s" in failed.error.message
    assert time.monotonic() - started < 30

    after = service.wait_status(_create(service, "a still"), DONE)
    assert after.status is VideoStatus.completed


def test_cancel_queued_never_runs_and_cancel_running_stops_within_a_second(
    service: Service,
) -> None:
    running = _create(service, "[slow] a long one", task="text_to_video")
    wait_for(lambda: _sampling(service, running), 60, "sampling to start")
    queued = _create(service, "waits behind it")
    assert service.record(queued).status is VideoStatus.queued

    cancelled = service.http.post(f"/v1/videos/{queued}/cancel").json()
    assert cancelled["status"] == "cancelled"
    response = service.http.post(f"/v1/videos/{running}/cancel").json()
    assert response["status"] == "cancelled"

    stopped = wait_for(lambda: service.record(running).stopped_at, 10, "the worker to stop")
    record = service.record(running)
    assert stopped - record.cancel_requested_at < 1.0  # sampling stopped within a second
    assert record.status is VideoStatus.cancelled and not record.outputs

    after = service.wait_status(_create(service, "next"), DONE)
    assert after.status is VideoStatus.completed
    never = service.record(queued)
    assert never.status is VideoStatus.cancelled and never.attempts == 0


def test_a_sigkilled_worker_s_job_runs_again_on_a_live_worker(service: Service) -> None:
    pool = service.workers
    victim = pool.alive()[0]
    # The first run hangs (until the kill); the re-run is a normal one.
    video = _create(service, f"[hang-once] {uuid.uuid4().hex} survives its worker")
    wait_for(
        lambda: service.record(video).status is VideoStatus.in_progress, 60, "the job to start"
    )
    assert service.record(video).worker == victim

    rescuer = pool.start()
    pool.wait_ready(rescuer)
    pool.procs[victim].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    pool.procs[victim].wait()

    done = service.wait_status(video, DONE, timeout=90)
    assert done.status is VideoStatus.completed, done.error
    assert done.worker == rescuer and done.attempts == 2
    assert time.monotonic() - killed_at < 60
    assert service.store.path(video, done.outputs["video"]).is_file()


def test_sigterm_finishes_the_current_job_then_exits(service: Service) -> None:
    pool = service.workers
    name = pool.alive()[0]
    proc = pool.procs[name]
    video = _create(service, "[slow] finish me")
    wait_for(lambda: _sampling(service, video), 60, "sampling to start")

    proc.send_signal(signal.SIGTERM)
    later = _create(service, "after the stop")
    assert service.wait_status(video, DONE, timeout=60).status is VideoStatus.completed
    assert proc.wait(timeout=10) == 0  # at once: rq's 60 s command listener is not waited for
    assert service.record(later).status is VideoStatus.queued  # not taken by a stopping worker

    pool.ensure()  # a fresh worker picks it up
    assert service.wait_status(later, DONE).status is VideoStatus.completed
