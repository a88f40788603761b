"""The Videos API end to end with the official openai SDK: real HTTP, Redis, worker, ffmpeg."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import httpx
import openai
import pytest

from core.store import VideoStatus
from models.card import load_card
from models.spec import MAX_SEED
from tests.conftest import Service, start_api
from models import media

SIZE = "32x32"  # the tiny model's card
FPS = 8.0


def _download(client: openai.OpenAI, video_id: str, tmp_path: Path, variant: str = "video") -> Path:
    suffix = {"video": ".mp4", "thumbnail": ".webp", "spritesheet": ".jpg", "image": ".png"}[
        variant
    ]
    path = tmp_path / f"{video_id}-{variant}{suffix}"
    if variant == "image":  # ours: not in the SDK's Literal, so through extra_query
        content = client.videos.download_content(video_id, extra_query={"variant": "image"})
    else:
        content = client.videos.download_content(video_id, variant=variant)
    path.write_bytes(content.read())
    return path


def test_create_and_poll_then_download_gives_the_requested_video(
    service: Service, tmp_path: Path
) -> None:
    client = service.openai()
    video = client.videos.create_and_poll(
        prompt="a red ball rolls right",
        size=SIZE,
        seconds="2",
        extra_body={"seed": 7},
        poll_interval_ms=100,
    )
    assert video.status == "completed", video.error
    assert (video.progress, video.size, video.seconds, video.model) == (100, SIZE, "2", "tiny")
    assert video.model_extra["seed"] == 7 and video.model_extra["task"] == "text_to_video"
    assert video.completed_at >= video.created_at and video.expires_at > video.completed_at

    mp4 = _download(client, video.id, tmp_path)
    info = media.probe(mp4)
    assert (info.video_codec, info.width, info.height, info.fps) == ("h264", 32, 32, FPS)
    assert not info.has_audio
    frames, _ = media.decode_video(mp4)
    assert frames.shape == (16, 32, 32, 3)  # 2 s at 8 fps

    assert media.probe(_download(client, video.id, tmp_path, "thumbnail")).kind == "image"
    sheet = media.probe(_download(client, video.id, tmp_path, "spritesheet"))
    assert sheet.kind == "image" and sheet.width == 4 * 32  # 16 frames in a 4x4 grid


def test_with_audio_muxes_an_aac_track(service: Service, tmp_path: Path) -> None:
    client = service.openai()
    video = client.videos.create_and_poll(
        prompt="a drum", seconds="1", extra_body={"with_audio": True}, poll_interval_ms=200
    )
    assert video.status == "completed", video.error
    info = media.probe(_download(client, video.id, tmp_path))
    assert (info.video_codec, info.audio_codec, info.sample_rate) == ("h264", "aac", 16_000)
    assert len(media.decode_video(tmp_path / f"{video.id}-video.mp4")[0]) == 8
    audio = media.decode_audio(tmp_path / f"{video.id}-video.mp4", sample_rate=16_000)
    assert abs(len(audio) - 16_000) < 1_600  # one second of sound


def test_text_to_image_gives_a_png_and_a_still_clip(service: Service, tmp_path: Path) -> None:
    client = service.openai()
    video = client.videos.create_and_poll(
        prompt="a green square", extra_body={"task": "text_to_image"}, poll_interval_ms=100
    )
    assert video.status == "completed", video.error
    png = media.probe(_download(client, video.id, tmp_path, "image"))
    assert (png.format, png.width, png.height) == ("png_pipe", 32, 32)
    frames, _ = media.decode_video(_download(client, video.id, tmp_path))
    assert frames.shape == (8, 32, 32, 3)  # the still for one second
    assert video.seconds == "1"


def test_image_upload_runs_image_to_video(
    service: Service, image_png: Path, tmp_path: Path
) -> None:
    client = service.openai()
    with image_png.open("rb") as f:
        video = client.videos.create_and_poll(
            prompt="it moves", input_reference=f, poll_interval_ms=100
        )
    assert video.status == "completed", video.error
    assert video.model_extra["task"] == "image_to_video"
    frames, _ = media.decode_video(_download(client, video.id, tmp_path))
    assert frames.shape == (17, 32, 32, 3)


def test_list_pages_with_a_cursor_and_delete_removes_files(service: Service) -> None:
    client = service.openai()
    ids = [
        client.videos.create(prompt=f"still {i}", extra_body={"task": "text_to_image"}).id
        for i in range(3)
    ]
    first = client.videos.list(limit=2)
    assert [v.id for v in first.data] == ids[::-1][:2] and first.has_more
    second = client.videos.list(limit=2, after=first.last_id)
    assert [v.id for v in second.data] == ids[:1] and not second.has_more
    assert [v.id for v in client.videos.list(order="asc", limit=1)] == ids  # auto-paginates

    done = service.wait_status(ids[0], {VideoStatus.completed})
    folder = service.store.video_dir(ids[0])
    assert (folder / done.outputs["video"]).is_file()
    deleted = client.videos.delete(ids[0])
    assert (deleted.id, deleted.deleted, deleted.object) == (ids[0], True, "video.deleted")
    assert not folder.exists()
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(ids[0])
    assert ids[0] not in [v.id for v in client.videos.list()]
    for video_id in ids[1:]:
        service.wait_status(video_id, {VideoStatus.completed})


def test_remix_edit_and_extend_build_on_a_finished_video(
    service: Service, clip_mp4: Path, tmp_path: Path
) -> None:
    client = service.openai()
    source = client.videos.create_and_poll(prompt="a ball", poll_interval_ms=100)
    assert source.status == "completed", source.error

    remix = client.videos.remix(source.id, prompt="the same, in blue", extra_body={"seed": 1})
    assert remix.remixed_from_video_id == source.id
    assert remix.model_extra["task"] == "stylize"
    with clip_mp4.open("rb") as f:
        upload = client.videos.edit(prompt="as a sketch", video=f)
    assert upload.model_extra["task"] == "stylize"
    with clip_mp4.open("rb") as f:
        extension = client.videos.extend(prompt="it goes on", seconds="1", video=f)
    assert extension.model_extra["task"] == "continuation"

    for video in (remix, upload):
        done = client.videos.poll(video.id, poll_interval_ms=100)
        assert done.status == "completed", done.error
        assert media.decode_video(_download(client, video.id, tmp_path))[0].shape == (17, 32, 32, 3)
    done = client.videos.poll(extension.id, poll_interval_ms=100)
    assert done.status == "completed", done.error
    assert done.seconds == "3.125"  # the 17-frame input plus 8 new frames, stitched
    assert len(media.decode_video(_download(client, extension.id, tmp_path))[0]) == 25


def test_retrieve_says_when_to_poll_again(service: Service) -> None:
    client = service.openai()
    video = client.videos.create(prompt="x", extra_body={"task": "text_to_image"})
    response = client.videos.with_raw_response.retrieve(video.id)
    assert response.headers["openai-poll-after-ms"] == "200"
    service.wait_status(video.id, {VideoStatus.completed})


def test_idempotency_key_returns_the_first_video(service: Service) -> None:
    headers = {"Idempotency-Key": "same-request-1"}
    body = {"prompt": "once", "task": "text_to_image"}
    first = service.http.post("/v1/videos", json=body, headers=headers).json()
    again = service.http.post("/v1/videos", json=body, headers=headers).json()
    assert again["id"] == first["id"]
    assert len(service.http.get("/v1/videos").json()["data"]) == 1
    service.wait_status(first["id"], {VideoStatus.completed})


def test_events_stream_progress_until_completed(service: Service) -> None:
    video = service.http.post("/v1/videos", json={"prompt": "x", "task": "text_to_image"}).json()
    events = []
    with service.http.stream("GET", f"/v1/videos/{video['id']}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert events[-1]["status"] == "completed" and events[-1]["progress"] == 100
    assert all(a["progress"] <= b["progress"] for a, b in itertools.pairwise(events))


def test_a_request_naming_no_guidance_gets_the_models_own(
    service: Service, logs: Path, tmp_path: Path
) -> None:
    # a checkpoint whose card recommends guidance 2.5 (only the card is read by the API)
    folder = tmp_path / "guided"
    folder.mkdir()
    card = {**load_card("tiny").to_dict(), "name": "guided", "guidance_scale": 2.5}
    (folder / "config.json").write_text(json.dumps({"name": "guided", "card": card}))
    server = start_api(service.workers.env, logs, VIDEOPOET_MODEL=str(folder))
    try:
        http = httpx.Client(base_url=server.url, timeout=10)
        plain = http.post("/v1/videos", json={"prompt": "a red ball rolls right"})
        off = http.post("/v1/videos", json={"prompt": "a red ball", "guidance_scale": 1.0})
        config = http.get("/playground/config.json").json()
        for response in (plain, off):  # no worker serves "guided": take the jobs back
            http.delete(f"/v1/videos/{response.json()['id']}")
    finally:
        server.stop()
    assert plain.status_code == 200 and plain.json()["guidance_scale"] == 2.5
    assert off.status_code == 200 and off.json()["guidance_scale"] == 1.0
    assert config["guidance_scale"] == 2.5


def test_a_request_without_a_seed_gets_one_from_the_whole_documented_range(
    service: Service,
) -> None:
    # Seeds are 0..2^63-1 (the schema's bound); an omitted one is drawn from all of it, so the
    # seed a video reports can be sent back and replays it.
    client = service.openai()
    seeds = []
    for _ in range(4):
        video = client.videos.create(prompt="a dot", extra_body={"task": "text_to_image"})
        seeds.append(video.model_extra["seed"])
    assert all(0 <= seed <= MAX_SEED for seed in seeds)
    assert max(seeds) >= 2**32, seeds  # a draw below 2^32 four times: p = 2^-124
    too_big = service.http.post("/v1/videos", json={"prompt": "a dot", "seed": MAX_SEED + 1})
    assert too_big.status_code == 422 and str(MAX_SEED) in too_big.text
