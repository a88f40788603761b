"""Proven across hosts (issue #31): Redis, S3, the API (and the notifier) and two workers each
on a host of its own, the client and its webhook receiver on another (tests/fleet/). Jobs are
sent; while worker-a samples some of them its host's cable is pulled. Its jobs are found
abandoned and run again on worker-b; every job completes exactly once (one completed record,
one successful RQ execution), fires its `video.completed` webhook once, and has its objects in
the bucket, downloadable through the API. Then the cable goes back in: worker-a, back on the
network, completes, notifies and overwrites nothing.
"""

from __future__ import annotations

import time
from typing import Any

import openai
from rq.job import Job
from rq.results import Result
from rq.serializers import JSONSerializer

from core.queue import WORKERS_KEY, queue_name
from core.store import Store, VideoRecord, VideoStatus
from tests.conftest import MODEL, SAMPLING_STAGES, wait_for
from tests.fleet.conftest import PREFIX, Hosts
from tests.s3server import BUCKET


JOBS = 6
SDK = openai.OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")


def _records(hosts: Hosts, ids: list[str]) -> dict[str, VideoRecord]:
    def read() -> dict[str, VideoRecord]:
        client = hosts.redis()
        try:
            store = Store(client, hosts.fleet.folder / "unused")
            return {i: r for i in ids if (r := store.get(i)) is not None}
        finally:
            client.close()

    return hosts.fleet.client(read)


def _objects(hosts: Hosts) -> dict[str, str]:
    """Every object under the service's prefix: key -> ETag."""

    def list_all() -> dict[str, str]:
        pages = hosts.s3().get_paginator("list_objects_v2")
        found = {}
        for page in pages.paginate(Bucket=BUCKET, Prefix=PREFIX + "/"):
            found.update({item["Key"]: item["ETag"] for item in page.get("Contents", [])})
        return found

    return hosts.fleet.client(list_all)


def _rq_outcomes(hosts: Hosts, ids: list[str]) -> dict[str, tuple[str, list[str]]]:
    """Each job's RQ status and the types of the results its executions left."""

    def read() -> dict[str, tuple[str, list[str]]]:
        client = hosts.redis()
        raw = type(client).from_url(hosts.redis_url, socket_timeout=5)
        try:
            found = {}
            for video_id in ids:
                job = Job.fetch(video_id, connection=raw, serializer=JSONSerializer)
                results = Result.all(job, serializer=JSONSerializer)
                found[video_id] = (
                    job.get_status().value,
                    [Result.Type(r.type).name for r in results],
                )
            return found
        finally:
            raw.close()
            client.close()

    return hosts.fleet.client(read)


def _events(hosts: Hosts) -> list[Any]:
    """Every webhook the receiver got, checked with the SDK (signature, timestamp)."""
    return [
        SDK.webhooks.unwrap(body, headers, secret=hosts.secret)
        for path, headers, body in list(hosts.receiver.received)
        if path == "/hooks"
    ]


def test_a_worker_host_cut_off_mid_job_loses_nothing_and_repeats_nothing(hosts: Hosts) -> None:
    fleet = hosts.fleet
    a, b = hosts.worker_names["worker-a"], hosts.worker_names["worker-b"]
    started = time.monotonic()

    def create() -> list[str]:
        with hosts.http() as http:
            ids = []
            for i in range(JOBS):
                body = {"prompt": f"[slow] fleet {i}", "task": "text_to_video", "seed": i}
                response = http.post("/v1/videos", json=body)
                assert response.status_code == 200, response.text
                ids.append(response.json()["id"])
            return ids

    ids = fleet.client(create)

    # worker-a samples some of them, and worker-b has taken some too
    def both_sampling() -> list[str]:
        records = _records(hosts, ids).values()
        on = {
            name: [
                r.id for r in records if r.worker == name and r.status is VideoStatus.in_progress
            ]
            for name in (a, b)
        }
        sampling_a = [r.id for r in records if r.id in on[a] and r.stage in SAMPLING_STAGES]
        return sampling_a if sampling_a and on[b] else []

    wait_for(both_sampling, 60, "both workers to run jobs, worker-a sampling", interval=0.1)
    fleet.cut("worker-a")
    victims = [
        r.id
        for r in _records(hosts, ids).values()
        if r.worker == a and r.status is VideoStatus.in_progress
    ]
    assert victims

    def all_done() -> dict[str, VideoRecord]:
        records = _records(hosts, ids)
        unfinished = [r for r in records.values() if r.status is not VideoStatus.completed]
        assert not [
            r for r in unfinished if r.status in (VideoStatus.failed, VideoStatus.cancelled)
        ], unfinished
        return records if len(records) == JOBS and not unfinished else {}

    done: dict[str, VideoRecord] = wait_for(all_done, 120, "every job to complete", interval=0.25)  # type: ignore[assignment]
    for video_id in victims:
        record = done[video_id]
        assert record.worker == b and record.attempts == 2, record  # run again, on worker-b
    assert {r.attempts for r in done.values() if r.id not in victims} == {1}

    # one video.completed event per job, each sent once (no deduplication needed)
    wait_for(lambda: len(_events(hosts)) >= JOBS, 30, "a webhook per job")
    time.sleep(1.0)  # room for a duplicate to show up
    events = _events(hosts)
    assert len(events) == JOBS, [(e.id, e.data.id) for e in events]
    assert sorted(e.data.id for e in events) == sorted(ids)
    assert {e.type for e in events} == {"video.completed"}
    assert len({e.id for e in events}) == JOBS

    # each RQ job finished by one successful execution
    outcomes = _rq_outcomes(hosts, ids)
    assert {v: o for v, o in outcomes.items() if o != ("finished", ["SUCCESSFUL"])} == {}

    # every output is in the bucket (and nothing else: no half-written leftovers), and the
    # API serves it
    objects = _objects(hosts)
    assert sorted(objects) == sorted(
        f"{PREFIX}/{video_id}/{name}" for video_id, r in done.items() for name in r.outputs.values()
    )
    assert all(len(r.outputs) == 3 for r in done.values())  # video, thumbnail, spritesheet

    def downloads() -> dict[str, bytes]:
        with hosts.http() as http:
            found = {}
            for video_id in ids:
                response = http.get(f"/v1/videos/{video_id}/content")
                assert response.status_code == 200, response.text
                found[video_id] = response.content
            return found

    def s3_bodies() -> dict[str, bytes]:
        s3 = hosts.s3()
        return {
            video_id: s3.get_object(
                Bucket=BUCKET, Key=f"{PREFIX}/{video_id}/{done[video_id].outputs['video']}"
            )["Body"].read()
            for video_id in ids
        }

    served = fleet.client(downloads)
    assert served == fleet.client(s3_bodies)
    assert all(body[4:8] == b"ftyp" for body in served.values())
    recovered = time.monotonic() - started

    # the cable goes back in: worker-a, on the network again, repeats nothing
    fleet.restore("worker-a")
    restored_at = time.time()

    def a_back() -> bool:
        def beacon() -> float | None:
            client = hosts.redis()
            try:
                return client.zscore(WORKERS_KEY.format(queue_name(MODEL)), a)
            finally:
                client.close()

        seen = fleet.client(beacon)
        return seen is not None and seen > restored_at

    wait_for(a_back, 60, "worker-a's beacon after the link came back", interval=0.5)
    time.sleep(3.0)  # whatever worker-a was doing when cut off, it has done it by now
    assert _records(hosts, ids) == done
    assert len(_events(hosts)) == JOBS
    assert _rq_outcomes(hosts, ids) == outcomes
    assert _objects(hosts) == objects
    print(
        f"cut worker-a with {len(victims)} jobs; all {JOBS} completed once after "
        f"{recovered:.1f} s; worker-a back after {time.time() - restored_at:.1f} s"
    )
