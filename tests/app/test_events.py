"""GET /v1/videos/{id}/events: Server-Sent Events with status, progress and stage, ending at a
terminal status, resumable with Last-Event-ID (what a browser's EventSource sends)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

from tests.conftest import Service


@dataclass
class Event:
    name: str
    data: dict
    id: str | None


def read_events(response: httpx.Response) -> Iterator[Event]:
    """Parse a text/event-stream body into events (comments and `retry:` skipped)."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in fields:
                data = json.loads(fields["data"])
                yield Event(fields.get("event", "message"), data, fields.get("id"))
            fields = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(":")
            fields[key] = value.removeprefix(" ")


def slow_video(service: Service, task: str = "text_to_image") -> str:
    # "[slow]": each sampling step of the tiny model takes 0.1 s (tests/workers/faulty_pipeline);
    # a still is 16 steps, long enough to see it run.
    response = service.http.post("/v1/videos", json={"prompt": "[slow] a red ball", "task": task})
    assert response.status_code == 200, response.text
    return response.json()["id"]


def test_events_carry_stage_and_resume_after_last_event_id(service: Service) -> None:
    video_id = slow_video(service)
    url = f"/v1/videos/{video_id}/events"
    with service.http.stream("GET", url) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        first = next(read_events(response))
    assert first.name == "video" and first.id and first.data["status"] in ("queued", "in_progress")

    # A dropped connection comes back with the last id: what was seen is not sent again, and
    # the stream goes on from there to the end.
    with service.http.stream("GET", url, headers={"Last-Event-ID": first.id}) as response:
        rest = list(read_events(response))
    assert rest and rest[0].id != first.id
    assert rest[-1].data["status"] == "completed" and rest[-1].data["progress"] == 100
    progress = [e.data["progress"] for e in [first, *rest]]
    assert progress == sorted(progress)
    # While it runs, events say which stage it is in; finished, no stage.
    running = [e for e in rest if e.data["status"] == "in_progress"]
    assert running and all(e.data["stage"] for e in running)
    assert rest[-1].data["stage"] is None

    # Resuming after the terminal event: 204, which tells an EventSource to stop reconnecting.
    again = service.http.get(url, headers={"Last-Event-ID": rest[-1].id})
    assert again.status_code == 204
    # A fresh client gets the final state at once.
    with service.http.stream("GET", url) as response:
        final = list(read_events(response))
    assert [e.data["status"] for e in final] == ["completed"]


def test_events_end_when_the_video_is_cancelled_or_deleted(service: Service) -> None:
    cancelled = slow_video(service)
    with service.http.stream("GET", f"/v1/videos/{cancelled}/events") as response:
        statuses = []
        for event in read_events(response):
            statuses.append(event.data["status"])
            if len(statuses) == 1:
                assert service.http.post(f"/v1/videos/{cancelled}/cancel").status_code == 200
    assert statuses[-1] == "cancelled"

    deleted = slow_video(service)
    with service.http.stream("GET", f"/v1/videos/{deleted}/events") as response:
        names = []
        for event in read_events(response):
            names.append(event.name)
            if len(names) == 1:
                assert service.http.delete(f"/v1/videos/{deleted}").status_code == 200
    assert names[0] == "video" and names[-1] == "deleted"
    assert service.http.get(f"/v1/videos/{deleted}/events").status_code == 404
