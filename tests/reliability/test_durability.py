"""Redis killed mid-run and started again on its AOF: nothing queued or running is lost, the
API answers 503 (with Retry-After) while it is away, and the workers carry on by themselves.

Runs first among the reliability tests; its workers serve test_faults.py after it."""

from __future__ import annotations

import time

from core.store import VideoStatus
from tests.conftest import wait_for
from tests.reliability.conftest import WORKER_SETTINGS, Stack

OUTAGE_SECONDS = 2.0
AOF_FSYNC_SECONDS = 1.0  # appendfsync everysec


def test_queued_and_running_videos_survive_a_redis_restart(stack: Stack) -> None:
    names = stack.use_workers(2, **WORKER_SETTINGS)
    pids = {name: stack.workers.procs[name].pid for name in names}
    # A slow video on each worker (0.1 s a sampling step: mid-sampling when Redis goes), then
    # stills that wait in the queue meanwhile.
    running: list[str] = []
    for i in range(2):
        running.append(stack.create(prompt=f"[slow] running {i}", seed=i))
        wait_for(
            lambda: all(
                r.status is VideoStatus.in_progress for r in stack.records(running).values()
            ),
            60,
            f"video {i} in progress",
            interval=0.05,
        )
    queued = [stack.create(prompt=f"queued {i}", task="text_to_image") for i in range(2)]
    ids = running + queued
    records = stack.records(ids)
    assert {r.worker for r in records.values() if r.worker} == set(names)
    assert [records[i].status for i in queued] == [VideoStatus.queued] * 2
    time.sleep(AOF_FSYNC_SECONDS + 0.5)  # what a crash may lose: the last second of writes

    stack.redis_server.kill()
    down_since = time.monotonic()
    retrieve = stack.http.get(f"/v1/videos/{ids[0]}")
    create = stack.http.post("/v1/videos", json={"prompt": "while Redis is away"})
    listing = stack.http.get("/v1/videos")
    for response in (retrieve, create, listing):
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "unavailable"
        assert int(response.headers["retry-after"]) >= 1
    assert stack.http.get("/healthz").status_code == 200  # the process itself is fine
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_since)))
    stack.redis_server.start()  # same port, same AOF folder

    records = stack.wait_all(ids, {VideoStatus.completed, VideoStatus.failed}, timeout=180)
    failed = {i: r.error for i, r in records.items() if r.status is not VideoStatus.completed}
    assert not failed, failed
    for video_id in ids:
        assert stack.http.get(f"/v1/videos/{video_id}/content").status_code == 200
    completions = stack.ledger_events("completed")
    assert sorted(c for c in completions if c in records) == sorted(ids)  # once each
    # The same worker processes did it all: they reconnected on their own.
    assert {n: stack.workers.procs[n].pid for n in stack.workers.alive()} == pids
