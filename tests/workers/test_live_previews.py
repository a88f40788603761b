"""Live previews end to end: a worker on the continuous scheduler publishes the frames of each
latent frame as soon as its tokens are complete, and a client reading /events sees them in
order, each before the video's end, and downloads them with variant=preview."""

from __future__ import annotations

from pathlib import Path

from core.store import VideoStatus
from models import media
from tests.app.test_events import read_events
from tests.conftest import Service
from tests.workers.test_batching import DONE, _one_worker


def test_previews_arrive_in_order_before_the_end(service: Service, tmp_path: Path) -> None:
    _one_worker(service)
    # "[slow]": 0.1 s a step, so each of the tiny model's latent frames (16 tokens) takes
    # 1.6 s and every preview is seen by the stream's polls
    body = {"prompt": "[slow] a red ball", "task": "text_to_video", "preview": True, "seed": 4}
    response = service.http.post("/v1/videos", json=body)
    assert response.status_code == 200, response.text
    video_id = response.json()["id"]

    seen: list[tuple[str, dict]] = []
    downloads = []
    with service.http.stream("GET", f"/v1/videos/{video_id}/events", timeout=60) as stream:
        for event in read_events(stream):
            seen.append((event.name, event.data))
            if event.name == "preview":
                got = service.http.get(event.data["url"])
                assert got.status_code == 200 and got.headers["content-type"] == "video/mp4"
                downloads.append((event.data, got.content))
    names = [name for name, _ in seen]
    assert names[-1] == "video" and seen[-1][1]["status"] == "completed"
    previews = [data for name, data in seen if name == "preview"]
    # the tiny model's clip has 5 latent frames: previews of 0..3, then the finished video
    assert [p["frame_index"] for p in previews] == [0, 1, 2, 3]
    assert [p["frames"] for p in previews] == [1, 5, 9, 13]
    last_preview = max(i for i, name in enumerate(names) if name == "preview")
    assert all(name == "video" for name in names[last_preview + 1 :])
    # what a preview download holds: the frames made so far (a later preview may already have
    # replaced the file by the time it is fetched, never an earlier one)
    for data, content in downloads:
        path = tmp_path / "preview.mp4"
        path.write_bytes(content)
        frames, _ = media.decode_video(path, fps=8.0)
        assert len(frames) >= data["frames"]
    record = service.wait_status(video_id, DONE)
    assert record.status is VideoStatus.completed and record.preview_index == 3


def test_without_preview_nothing_is_published(service: Service) -> None:
    _one_worker(service)
    body = {"prompt": "a red ball", "task": "text_to_video", "seed": 4}
    video_id = service.http.post("/v1/videos", json=body).json()["id"]
    with service.http.stream("GET", f"/v1/videos/{video_id}/events", timeout=60) as stream:
        names = [event.name for event in read_events(stream)]
    assert "preview" not in names
    record = service.wait_status(video_id, DONE)
    assert record.status is VideoStatus.completed and record.preview_index is None
    missing = service.http.get(f"/v1/videos/{video_id}/content", params={"variant": "preview"})
    assert missing.status_code == 404 and "preview" in missing.json()["error"]["message"]
