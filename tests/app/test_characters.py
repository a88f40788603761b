"""Characters through the official SDK (`create_character`, `get_character`) and as the input of
a create (`input_reference: {"character_id": ...}`), on a keyed API with a real worker."""

from __future__ import annotations

import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from core.store import VideoStatus
from models import media
from tests.conftest import ApiServer, Service, start_api

ALICE, BOB = "vp-alice-characters", "vp-bob-characters"


@pytest.fixture(scope="module")
def keyed(service_env: dict[str, str], logs: Path) -> Iterator[ApiServer]:
    server = start_api(service_env, logs, VIDEOPOET_API_KEYS=f"{ALICE},{BOB}")
    yield server
    server.stop()


def _client(server: ApiServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def _post(server: ApiServer, path: str, key: str, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(f"{server.url}/v1{path}", headers=headers, timeout=60, **kwargs)


def test_the_sdk_creates_and_gets_a_character_only_for_its_key(
    service: Service, keyed: ApiServer, clip_mp4: Path
) -> None:
    alice, bob = _client(keyed, ALICE), _client(keyed, BOB)
    with clip_mp4.open("rb") as f:
        made = alice.videos.create_character(name="Red square", video=f)
    assert made.id and made.id.startswith("char_") and made.name == "Red square"
    assert made.created_at > 0
    assert made.model_extra["kind"] == "video" and made.model_extra["seconds"] == pytest.approx(
        2.125, abs=0.02
    )
    got = alice.videos.get_character(made.id)
    assert (got.id, got.name, got.created_at) == (made.id, made.name, made.created_at)
    with pytest.raises(openai.NotFoundError):
        bob.videos.get_character(made.id)  # another key's: as if it did not exist
    with pytest.raises(openai.NotFoundError):
        alice.videos.get_character("char_" + "0" * 32)

    # Bob cannot name it as an input either.
    answer = _post(
        keyed, "/videos/extensions", BOB, json={"video": {"character_id": made.id}, "seconds": "1"}
    )
    assert answer.status_code == 404 and made.id in answer.json()["error"]["message"]

    # Alice continues it (a video character) and restyles it.
    extension = _post(
        keyed,
        "/videos/extensions",
        ALICE,
        json={"video": {"character_id": made.id}, "seconds": "1"},
    )
    assert extension.status_code == 200, extension.text
    assert extension.json()["task"] == "continuation"
    restyled = _post(
        keyed, "/videos/edits", ALICE, json={"prompt": "in blue", "video": f"{made.id}"}
    )
    assert restyled.status_code == 200 and restyled.json()["task"] == "stylize", restyled.text
    for video in (extension.json(), restyled.json()):
        done = service.wait_status(video["id"], {VideoStatus.completed, VideoStatus.failed})
        assert done.status is VideoStatus.completed, done.error
    assert service.record(extension.json()["id"]).seconds == "3.125"  # 17 frames + 8 new

    deleted = httpx.delete(
        f"{keyed.url}/v1/videos/characters/{made.id}", headers={"Authorization": f"Bearer {ALICE}"}
    )
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    with pytest.raises(openai.NotFoundError):
        alice.videos.get_character(made.id)
    # The videos made from it keep their own copy of the reference.
    assert service.record(extension.json()["id"]).inputs["video"] == "input_video.mp4"


def test_an_image_character_conditions_image_to_video(
    service: Service, image_png: Path, tmp_path: Path
) -> None:
    client = service.openai()
    with image_png.open("rb") as f:
        answer = service.http.post(
            "/v1/videos/characters", data={"name": "Green"}, files={"image": ("g.png", f)}
        )
    assert answer.status_code == 200, answer.text
    character = answer.json()
    assert (character["kind"], character["width"], character["height"]) == ("image", 48, 40)

    # The SDK's typed `input_reference` takes files only: a reference rides in extra_body.
    video = client.videos.create_and_poll(
        prompt="it moves",
        extra_body={"input_reference": {"character_id": character["id"]}},
        poll_interval_ms=100,
    )
    assert video.status == "completed", video.error
    assert video.model_extra["task"] == "image_to_video"
    assert service.record(video.id).inputs == {"image": "input_input_reference.png"}

    # A task that takes no image says which ones do.
    wrong = service.http.post(
        "/v1/videos",
        json={
            "prompt": "x",
            "task": "text_to_video",
            "input_reference": {"character_id": character["id"]},
        },
    )
    assert wrong.status_code == 422
    message = wrong.json()["error"]["message"]
    assert character["id"] in message and "tasks that take an image: image_to_video" in message
    missing = service.http.post(
        "/v1/videos", json={"prompt": "x", "input_reference": {"character_id": "char_nope"}}
    )
    assert missing.status_code == 404 and "char_nope" in missing.json()["error"]["message"]


def test_a_bad_character_request_says_what_is_accepted(
    api: Service, image_png: Path, clip_mp4: Path, tmp_path: Path
) -> None:
    png = image_png.read_bytes()
    wav = tmp_path / "tone.wav"
    tone = media.decode_audio(clip_mp4, sample_rate=16_000)
    with wave.open(str(wav), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes((tone * 32_000).astype("<i2").tobytes())
    before = {p.name for p in api.artifact_dir.iterdir()}
    cases = [
        ({"json": {"name": "x"}}, 415, "multipart/form-data"),
        ({"data": {"name": "x"}, "files": {"other": ("a.txt", b"x")}}, 422, "video"),
        ({"files": {"image": ("g.png", png)}}, 422, "name is required"),
        ({"data": {"name": "  "}, "files": {"image": ("g.png", png)}}, 422, "name is required"),
        ({"data": {"name": "x"}, "files": {"image": ("g.txt", b"hello", "text/plain")}}, 415, ""),
        ({"data": {"name": "x"}, "files": {"video": ("v.mp4", b"not a video")}}, 422, "video"),
        (
            {"data": {"name": "x"}, "files": {"video": ("t.wav", wav.read_bytes())}},
            422,
            "image or a video",
        ),
        (
            {"data": {"name": "x"}, "files": {"image": ("g.png", png), "video": ("v.png", png)}},
            422,
            "one file",
        ),
    ]
    for kwargs, status, words in cases:
        answer = api.http.post("/v1/videos/characters", **kwargs)
        assert answer.status_code == status, (kwargs, answer.text)
        assert words in answer.json()["error"]["message"], answer.text
    # Nothing was kept of the refused ones.
    assert {p.name for p in api.artifact_dir.iterdir()} == before
