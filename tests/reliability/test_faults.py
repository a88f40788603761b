"""Faults on purpose, against real processes: workers SIGKILLed mid-batch again and again,
SIGTERM, an out-of-memory error mid-sampling, an input that turns corrupt, a failing ffmpeg.
Nothing is lost, nothing happens twice, and each failure says why.

The tests share one stack (tests/reliability/conftest.py) and run in this order, each leaving
workers the next may reuse.
"""

from __future__ import annotations

import time
from pathlib import Path

from core.store import VideoStatus
from tests.conftest import wait_for
from tests.reliability.conftest import (
    FFMPEG_FAILS_MARKER,
    FFMPEG_FAILURE,
    WORKER_SETTINGS,
    Stack,
)
from tests.reliability.effects import OOM_MARKER
from workers.jobs import PROGRESS_INPUTS_DONE, PROGRESS_SAMPLING_DONE

JOBS = 40
KILLS = 3
STILL_OUTPUTS = {"image.png", "video.mp4", "thumbnail.webp", "spritesheet.jpg"}


def _running_on(stack: Stack, ids: list[str], worker: str) -> list[str]:
    """Ids of videos `worker` is sampling now (claimed, past their inputs)."""
    return [
        video_id
        for video_id, record in stack.records(ids).items()
        if record.status is VideoStatus.in_progress
        and record.worker == worker
        and PROGRESS_INPUTS_DONE <= record.progress < PROGRESS_SAMPLING_DONE
    ]


def test_sigkilled_workers_lose_no_video_and_complete_each_once(stack: Stack) -> None:
    names = stack.use_workers(2, **WORKER_SETTINGS)
    # Slow stills (0.1 s a sampling step): long enough to be killed mid-batch.
    ids = [
        stack.create(prompt=f"[slow] job {i}", task="text_to_image", seed=i) for i in range(JOBS)
    ]
    hit: list[str] = []  # videos being sampled by a worker when it was killed
    for kill in range(KILLS - 1):  # the original workers, back to back
        target = names[kill]
        running = wait_for(
            lambda target=target: _running_on(stack, ids, target),
            120,
            f"worker {target} to be sampling",
            interval=0.05,
        )
        stack.kill_worker(target)
        hit += running  # type: ignore[arg-type]
        names.append(stack.start_worker(**WORKER_SETTINGS))

    # The last kill hits whichever replacement samples a video run again (found lost after a
    # kill): the killed workers' videos must survive more than one death.
    def rerun_running() -> tuple[str, list[str]] | None:
        records = stack.records(ids)
        for name in names[KILLS - 1 :]:
            running = _running_on(stack, ids, name)
            if any(records[i].attempts >= 2 for i in running):
                return name, running
        return None

    target, running = wait_for(rerun_running, 120, "a re-run to be sampling", interval=0.05)  # type: ignore[misc]
    stack.kill_worker(target)
    hit += running
    names.append(stack.start_worker(**WORKER_SETTINGS))

    records = stack.wait_all(ids, {VideoStatus.completed, VideoStatus.failed}, timeout=240)
    not_done = {
        i: (r.status, r.error) for i, r in records.items() if r.status is not VideoStatus.completed
    }
    assert not not_done, not_done
    assert len(set(hit)) >= KILLS  # each kill interrupted at least one video
    assert all(records[i].attempts >= 2 for i in hit)  # and those ran again
    # Exactly once: one completed transition per video, whatever died when.
    completions = stack.ledger_events("completed")
    assert sorted(c for c in completions if c in records) == sorted(ids)
    # One set of outputs each, no leftovers of an interrupted encode.
    for video_id in ids:
        folder = stack.artifact_dir / video_id
        assert {p.name for p in folder.iterdir()} == STILL_OUTPUTS, video_id
    # Retries are re-runs of interrupted sampling, not duplicate results.
    sampled = [p for p in stack.ledger_events("sampled") if p.startswith("[slow]_job")]
    assert len(sampled) >= JOBS


def test_sigterm_finishes_the_batch_in_hand_then_exits(stack: Stack) -> None:
    names = stack.use_workers(2, **WORKER_SETTINGS)
    ids = [stack.create(prompt=f"[slow] drain {i}", task="text_to_image", seed=i) for i in range(8)]
    target = names[0]
    running = wait_for(lambda: _running_on(stack, ids, target), 60, "a batch", interval=0.05)
    started = time.monotonic()
    assert stack.stop_worker(target, timeout=60) == 0  # a clean exit
    assert time.monotonic() - started < 60
    # Everything it had claimed, it finished before exiting.
    at_exit = stack.records(ids)
    claimed = {i for i, r in at_exit.items() if r.worker == target}
    assert set(running) <= claimed  # type: ignore[arg-type]
    assert all(at_exit[i].status is VideoStatus.completed for i in claimed), at_exit
    # The rest ran on the other worker; nothing waits, nothing ran twice.
    records = stack.wait_all(ids, {VideoStatus.completed}, timeout=120)
    assert all(r.attempts == 1 for r in records.values()), records
    assert {r.worker for i, r in records.items() if i not in claimed} <= {names[1]}


def test_out_of_memory_mid_sampling_fails_only_that_video(stack: Stack) -> None:
    (worker,) = stack.use_workers(1, **WORKER_SETTINGS)
    pid = stack.workers.procs[worker].pid
    # A slow still keeps the worker busy while the others queue up: it takes them as one batch.
    busy = stack.create(prompt="[slow] busy", task="text_to_image", seed=1)
    wait_for(lambda: _running_on(stack, [busy], worker), 60, "the busy video", interval=0.05)
    ids = [
        stack.create(prompt="fine 1", task="text_to_image", seed=1),
        stack.create(prompt=f"{OOM_MARKER} too big", task="text_to_image", seed=2),
        stack.create(prompt="fine 2", task="text_to_image", seed=3),
    ]
    records = stack.wait_all(ids + [busy], {VideoStatus.completed, VideoStatus.failed}, 120)
    statuses = [records[i].status for i in ids]
    assert statuses == [VideoStatus.completed, VideoStatus.failed, VideoStatus.completed]
    error = records[ids[1]].error
    assert error is not None and "out of memory" in error.message.lower(), error
    assert stack.workers.procs[worker].pid == pid and stack.workers.procs[worker].poll() is None
    # The three were sampled together first (the error hit the batch, mid-sampling).
    started = stack.ledger_events("started")
    assert started.count("fine_1") >= 1 and started.count("[oom]_too_big") >= 1


def test_an_input_that_turns_corrupt_fails_before_any_sampling(
    stack: Stack, clip_mp4: Path
) -> None:
    (worker,) = stack.use_workers(1, **WORKER_SETTINGS)
    # Refused at the door: a truncated upload never becomes a job.
    truncated = clip_mp4.read_bytes()[: clip_mp4.stat().st_size // 2]
    response = stack.http.post(
        "/v1/videos/extensions",
        data={"prompt": "half a clip", "seconds": "1"},
        files={"video": ("clip.mp4", truncated, "video/mp4")},
    )
    assert response.status_code == 422 and "cannot be decoded" in response.text
    # Passed the door, then damaged on disk before a worker took it: it fails decoding its
    # inputs, before the pipeline sees it.
    busy = stack.create(prompt="[slow] busy again", task="text_to_image", seed=2)
    wait_for(lambda: _running_on(stack, [busy], worker), 60, "the busy video", interval=0.05)
    with clip_mp4.open("rb") as f:
        response = stack.http.post(
            "/v1/videos/extensions",
            data={"prompt": "rotten", "seconds": "1"},
            files={"video": ("clip.mp4", f, "video/mp4")},
        )
    assert response.status_code == 200, response.text
    video_id = response.json()["id"]
    stored = stack.artifact_dir / video_id / "input_video.mp4"
    stored.write_bytes(stored.read_bytes()[:300])
    (record,) = stack.wait_all([video_id], {VideoStatus.failed}, timeout=120).values()
    assert record.error is not None and record.error.code == "invalid_input", record.error
    assert "rotten" not in stack.ledger_events("started")


def test_an_ffmpeg_failure_fails_the_video_with_ffmpeg_s_message(stack: Stack) -> None:
    (worker,) = stack.use_workers(1, **WORKER_SETTINGS)
    video_id = stack.create(prompt="[slow] encode me", task="text_to_image")
    (stack.artifact_dir / video_id / FFMPEG_FAILS_MARKER).touch()
    (record,) = stack.wait_all([video_id], {VideoStatus.failed}, timeout=60).values()
    assert record.error is not None and FFMPEG_FAILURE in record.error.message, record.error
    assert "[slow]_encode_me" in stack.ledger_events("sampled")  # it failed after sampling
    assert stack.workers.procs[worker].poll() is None  # the worker goes on
    after = stack.create(prompt="fine again", task="text_to_image")
    stack.wait_all([after], {VideoStatus.completed}, timeout=60)
