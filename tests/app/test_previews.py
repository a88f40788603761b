"""Live previews through the API: `preview` on create, the `preview` events of /events and
`GET /content?variant=preview`, over real HTTP against a real Redis (and a real bucket).

The record changes a worker would make are made here through the store, and previews are
published with the worker's own `publish_preview`, so each test decides exactly what the
stream sees. Creates that queue a job do it on an API serving a model no test worker serves.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from redis import Redis

from core.artifacts import S3Artifacts
from core.store import Store, VideoRecord, VideoStatus, new_video_id
from models.spec import Task, TaskSpec
from tests.app.test_events import Event, read_events
from tests.conftest import ApiServer, Service, start_api
from tests.s3server import S3Server
from workers.previews import PREVIEW_NAME, publish_preview

# A model whose queues no test worker reads: what it queues stays queued.
IDLE_MODEL = "demo"
RUNNING = frozenset({VideoStatus.in_progress})


def _frames(count: int) -> np.ndarray:
    frames = np.full((count, 16, 16, 3), 20, dtype=np.uint8)
    for t in range(count):
        frames[t, 4:10, t : t + 6] = (220, 40, 40)
    return frames


def _running(store: Store, **fields: object) -> VideoRecord:
    """A video a worker is making (as the worker's claim leaves it), stored."""
    spec = TaskSpec(task=Task.text_to_video, prompt="a ball", seed=1)
    values: dict[str, object] = dict(
        id=new_video_id(),
        model="tiny",
        created_at=int(time.time()),
        seconds="2.125",
        size="32x32",
        task=spec.task,
        spec=spec,
        status=VideoStatus.in_progress,
        attempts=1,
        progress=10,
        stage="text_to_video",
        preview=True,
    )
    record = VideoRecord(**{**values, **fields})  # type: ignore[arg-type]
    store.create(record)
    return record


def _complete(store: Store, video_id: str, **fields: object) -> None:
    """Finish as the worker does: its outputs written over the running ones."""
    outputs = {
        "video": "video.mp4",
        "thumbnail": "thumbnail.webp",
        "spritesheet": "spritesheet.jpg",
    }
    done = store.finish(
        video_id,
        VideoStatus.completed,
        only_if=RUNNING,
        progress=100,
        stage=None,
        outputs=outputs,
        **fields,
    )
    assert done == 1


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


# --- the create field ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def idle_api(service_env: dict[str, str], logs: Path) -> Iterator[ApiServer]:
    server = start_api(service_env, logs, VIDEOPOET_MODEL=IDLE_MODEL)
    yield server
    server.stop()


@pytest.mark.parametrize("value", ["yes", 1, "on", [True]])
def test_preview_must_be_true_or_false(api: Service, value: object) -> None:
    # A completed video to remix, so every creating endpoint reads its body.
    source = _running(api.store, status=VideoStatus.completed, outputs={"video": "video.mp4"})
    for path in ("/v1/videos", "/v1/videos/edits", "/v1/videos/extensions"):
        body = {"prompt": "x", "preview": value}
        if path != "/v1/videos":
            body["video"] = {"id": source.id}
        error = _error(api.http.post(path, json=body), 422)
        assert error["param"] == "preview" and "preview: must be true or false" in error["message"]
    error = _error(
        api.http.post(f"/v1/videos/{source.id}/remix", json={"prompt": "x", "preview": value}),
        422,
    )
    assert "preview: must be true or false" in error["message"]
    if isinstance(value, str):  # the same from a form
        error = _error(api.http.post("/v1/videos", data={"prompt": "x", "preview": value}), 422)
        assert f"preview: must be true or false (got {value!r})" in error["message"]
    # Nothing was made: the source is the one video.
    assert [v["id"] for v in api.http.get("/v1/videos").json()["data"]] == [source.id]


def test_preview_is_kept_on_the_record(api: Service, idle_api: ApiServer) -> None:
    with httpx.Client(base_url=idle_api.url, timeout=60) as http:

        def create(**kwargs: object) -> VideoRecord:
            response = http.post("/v1/videos", **kwargs)  # type: ignore[arg-type]
            assert response.status_code == 200, response.text
            return api.record(response.json()["id"])

        assert create(json={"prompt": "a ball", "preview": True}).preview is True
        assert create(json={"prompt": "a ball", "preview": False}).preview is False
        assert create(json={"prompt": "a ball"}).preview is False
        # multipart: the openai SDK writes booleans as "true" / "false"
        assert create(data={"prompt": "a ball", "preview": "true"}).preview is True
        assert create(data={"prompt": "a ball", "preview": "false"}).preview is False
        # The SDK sends it through extra_body.
        client = api.openai(idle_api.url)
        video = client.videos.create(prompt="a ball", extra_body={"preview": True})
        assert api.record(video.id).preview is True

        # An Idempotency-Key retry that spells out the default is the same request.
        key = {"Idempotency-Key": "preview-retry"}
        first = http.post("/v1/videos", json={"prompt": "a ball"}, headers=key).json()
        again = http.post("/v1/videos", json={"prompt": "a ball", "preview": False}, headers=key)
        assert again.status_code == 200 and again.json()["id"] == first["id"]
        other = http.post("/v1/videos", json={"prompt": "a ball", "preview": True}, headers=key)
        assert _error(other, 409)["code"] == "idempotency_conflict"


# --- the events ----------------------------------------------------------------------------
def _preview_data(video_id: str, index: int, frames: int) -> dict:
    return {
        "id": video_id,
        "frame_index": index,
        "frames": frames,
        "url": f"/v1/videos/{video_id}/content?variant=preview",
    }


def test_preview_events_come_in_order_before_the_terminal_event(api: Service) -> None:
    record = _running(api.store)
    url = f"/v1/videos/{record.id}/events"
    # What the worker does after each event the client gets: previews of more and more frames
    # (the second without any other change), then the last preview and the completion in one
    # write, so one poll sees both.
    steps = [
        {"progress": 30, "preview_index": 0, "preview_frames": 1},
        {"preview_index": 1, "preview_frames": 5},
    ]
    events: list[Event] = []
    with api.http.stream("GET", url) as response:
        for event in read_events(response):
            events.append(event)
            if event.name != "video" or event.data["status"] != "in_progress":
                continue
            if steps:
                assert api.store.update(record.id, only_if=RUNNING, **steps.pop(0)) == 1
            else:
                _complete(api.store, record.id, preview_index=2, preview_frames=9)

    names = [e.name for e in events]
    assert names == ["video", "preview", "video", "preview", "video", "preview", "video"]
    previews = [e for e in events if e.name == "preview"]
    assert [e.data for e in previews] == [
        _preview_data(record.id, 0, 1),
        _preview_data(record.id, 1, 5),
        _preview_data(record.id, 2, 9),
    ]
    assert events[-1].data["status"] == "completed"
    # A preview carries no id; each video event's id names the preview seen with it.
    assert all(e.id is None for e in previews)
    ids = [e.id for e in events if e.name == "video"]
    assert len(set(ids)) == 4 and all(ids)
    assert ".p" not in ids[0] and ".p1." in ids[2] and ".p2." in ids[3]

    # Resuming sends the latest preview the client had not seen, then what changed.
    for last_id in (ids[0], ids[1]):
        with api.http.stream("GET", url, headers={"Last-Event-ID": last_id}) as response:
            rest = list(read_events(response))
        assert [e.name for e in rest] == ["preview", "video"]
        assert rest[0].data == _preview_data(record.id, 2, 9)
        assert rest[1].data["status"] == "completed"
    # A client that saw the end: 204. A new one: the latest preview, then the end.
    assert api.http.get(url, headers={"Last-Event-ID": ids[-1]}).status_code == 204
    with api.http.stream("GET", url) as response:
        fresh = list(read_events(response))
    assert [e.name for e in fresh] == ["preview", "video"]


def test_a_new_run_s_previews_are_sent_though_their_index_is_lower(api: Service) -> None:
    # The first run published up to latent frame 3, then its worker was lost; the next run
    # (attempt 2) starts again from frame 0.
    record = _running(api.store, preview_index=3, preview_frames=13)
    url = f"/v1/videos/{record.id}/events"
    frames = []
    with api.http.stream("GET", url) as response:
        for event in read_events(response):
            if event.name == "preview":
                frames.append(event.data["frame_index"])
            elif event.data["status"] == "in_progress" and event.data["progress"] == 10:
                api.store.update(
                    record.id, attempts=2, progress=11, preview_index=0, preview_frames=1
                )
            elif event.data["progress"] == 11:
                _complete(api.store, record.id)
    assert frames == [3, 0]


def test_a_video_without_previews_streams_as_before(api: Service) -> None:
    record = _running(api.store, preview=False)
    with api.http.stream("GET", f"/v1/videos/{record.id}/events") as response:
        events = []
        for event in read_events(response):
            events.append(event)
            if event.data["status"] == "in_progress":
                _complete(api.store, record.id)
    assert [e.name for e in events] == ["video", "video"]
    assert [e.id for e in events] == ["1.10.in_progress.text_to_video", "1.100.completed."]


# --- the content ---------------------------------------------------------------------------
def test_the_preview_variant_serves_the_latest_preview(api: Service) -> None:
    # Asked for no previews: the 404 says how to get them.
    plain = _running(api.store, preview=False)
    error = _error(api.http.get(f"/v1/videos/{plain.id}/content?variant=preview"), 404)
    assert error["param"] == "variant"
    assert (
        "no preview yet: create the video with preview: true; previews appear as its frames "
        "are made" in error["message"]
    )

    record = _running(api.store)
    url = f"/v1/videos/{record.id}/content"
    error = _error(api.http.get(url, params={"variant": "preview"}), 404)
    assert "no preview yet: previews appear as its frames are made" in error["message"]

    assert publish_preview(api.store, record.id, _frames(5), 8.0, 0, expect=1)
    stored = (api.artifact_dir / record.id / PREVIEW_NAME).read_bytes()
    response = api.http.get(url, params={"variant": "preview"})
    assert response.status_code == 200 and response.content == stored
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["cache-control"] == "no-cache"
    assert f'filename="{record.id}-preview.mp4"' in response.headers["content-disposition"]
    part = api.http.get(url, params={"variant": "preview"}, headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == stored[:100]
    # The final outputs wait for completion; the 409 points at the preview meanwhile.
    assert "variant=preview" in _error(api.http.get(url), 409)["message"]

    # A newer preview replaces it under the same URL.
    assert publish_preview(api.store, record.id, _frames(9), 8.0, 1, expect=1)
    newer = api.http.get(url, params={"variant": "preview"}).content
    assert newer == (api.artifact_dir / record.id / PREVIEW_NAME).read_bytes() != stored
    # Completed, the last preview is still served beside the outputs (which name no preview).
    _complete(api.store, record.id)
    assert api.http.get(url, params={"variant": "preview"}).content == newer
    error = _error(api.http.get(url, params={"variant": "image"}), 404)
    assert error["message"].endswith("available: spritesheet, thumbnail, video")

    # The accepted variants are named when another is asked for.
    error = _error(api.http.get(url, params={"variant": "previews"}), 422)
    assert "'preview'" in error["message"] and "'thumbnail'" in error["message"]


@pytest.fixture
def s3_api(
    s3_server: S3Server,
    service_env: dict[str, str],
    logs: Path,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[ApiServer, Store]]:
    """An API on a bucket (a Redis database of its own, no worker), and a store on the same
    bucket for this test to publish with, as a worker would."""
    prefix = s3_server.new_prefix()
    env = s3_server.env(prefix)
    for name, value in env.items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    url = f"{redis_url.rsplit('/', 1)[0]}/7"
    redis = Redis.from_url(url, decode_responses=True)
    redis.flushdb()
    server = start_api(
        {**service_env, **env, "VIDEOPOET_REDIS_URL": url},
        logs,
        VIDEOPOET_ARTIFACT_DIR=str(tmp_path / "never-made"),
    )
    artifacts = S3Artifacts(env["VIDEOPOET_ARTIFACT_URL"], endpoint_url=s3_server.endpoint)
    try:
        yield server, Store(redis, artifacts)
    finally:
        server.stop()
        redis.close()


def test_the_preview_variant_on_object_storage(s3_api: tuple[ApiServer, Store]) -> None:
    server, store = s3_api
    record = _running(store)
    assert publish_preview(store, record.id, _frames(5), 8.0, 0)
    assert store.artifacts.names(record.id) == [PREVIEW_NAME]
    stored = store.artifacts.read(record.id, PREVIEW_NAME)
    body = b"".join(stored.chunks)
    with httpx.Client(base_url=server.url, timeout=60) as http:
        url = f"/v1/videos/{record.id}/content"
        response = http.get(url, params={"variant": "preview"})
        assert response.status_code == 200 and response.content == body
        assert response.headers["content-type"] == "video/mp4"
        part = http.get(url, params={"variant": "preview"}, headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == body[10:20]
