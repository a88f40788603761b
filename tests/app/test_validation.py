"""Bad requests: each gets a 4xx in OpenAI's error shape whose message says what is wrong."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.conftest import MAX_UPLOAD_BYTES, Service


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"prompt": "x", "task": "dance"}, 422, "task: Input should be 'unconditional'"),
        ({"task": "text_to_video"}, 422, "task text_to_video needs prompt; missing prompt"),
        ({"prompt": "x", "task": "image_to_video"}, 422, "needs image; missing image"),
        ({"prompt": "x", "task": "stylize"}, 422, "needs prompt, video; missing video"),
        ({"prompt": "x", "size": "big"}, 422, "size must be WIDTHxHEIGHT such as '32x32'"),
        ({"prompt": "x", "size": "1280x720"}, 422, "accepted sizes: 32x32"),
        ({"prompt": "x", "seconds": "four"}, 422, "seconds must be a number of seconds"),
        ({"prompt": "x", "seconds": "-2"}, 422, "seconds must be greater than 0"),
        ({"prompt": "x", "seconds": "90"}, 422, "less than or equal to 60"),
        (
            {"prompt": "x", "seconds": "4", "task": "stylize", "video": {"id": "video_x"}},
            404,
            "no video",
        ),
        ({"prompt": "x", "seconds": "1", "task": "text_to_image"}, 422, "leave `seconds` unset"),
        ({"prompt": "x", "model": "sora-2"}, 422, "this server runs 'tiny'"),
        ({"prompt": "x", "temprature": 0.5}, 422, "unknown field 'temprature'"),
        ({"prompt": "x", "temperature": "hot"}, 422, "temperature: Input should be a valid number"),
        ({"prompt": "x", "mask_box": "1,2,3"}, 422, "mask_box"),
        ({"prompt": "x", "task": "text_to_image", "with_audio": True}, 422, "with_audio"),
        (
            {"prompt": "x", "input_reference": {"image_url": "https://example.com/a.png"}},
            422,
            "data URLs",
        ),
    ],
)
def test_bad_create_bodies_say_what_is_wrong(
    api: Service, body: dict, status: int, says: str
) -> None:
    error = _error(api.http.post("/v1/videos", json=body), status)
    assert says in error["message"]
    assert api.http.get("/v1/videos").json()["data"] == []  # nothing was queued


def test_unknown_task_lists_the_tasks(api: Service) -> None:
    error = _error(api.http.post("/v1/videos", json={"prompt": "x", "task": "dance"}), 422)
    assert error["param"] == "task" and "video_to_audio" in error["message"]


def test_a_video_input_needs_a_task(api: Service, clip_mp4: Path) -> None:
    with clip_mp4.open("rb") as f:
        response = api.http.post("/v1/videos", data={"prompt": "x"}, files={"input_reference": f})
    assert (
        "task is required with a video input: one of av_continuation, continuation, inpaint"
        in _error(response, 422)["message"]
    )


@pytest.mark.parametrize(
    ("name", "content", "content_type", "status", "says"),
    [
        ("notes.txt", b"hello", "text/plain", 415, "unsupported file type"),
        ("clip.mp4", b"", "video/mp4", 422, "the file is empty (0 bytes)"),
        (
            "clip.mp4",
            b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8,
            "video/mp4",
            422,
            "cannot be decoded",
        ),
    ],
)
def test_bad_uploads_are_refused_before_queueing(
    api: Service, name: str, content: bytes, content_type: str, status: int, says: str
) -> None:
    before = set(api.artifact_dir.iterdir())
    response = api.http.post(
        "/v1/videos",
        data={"prompt": "x", "task": "continuation"},
        files={"input_reference": (name, content, content_type)},
    )
    error = _error(response, status)
    assert says in error["message"] and error["param"] == "input_reference"
    assert set(api.artifact_dir.iterdir()) == before  # the upload was not kept


def test_a_truncated_video_is_refused(api: Service, clip_mp4: Path) -> None:
    truncated = clip_mp4.read_bytes()[: clip_mp4.stat().st_size // 3]
    response = api.http.post(
        "/v1/videos/extensions",
        data={"prompt": "x", "seconds": "1"},
        files={"video": ("clip.mp4", truncated, "video/mp4")},
    )
    assert "cannot be decoded" in _error(response, 422)["message"]


def test_an_oversized_upload_gets_413(api: Service) -> None:
    big = b"\x00" * (MAX_UPLOAD_BYTES + 10)
    response = api.http.post(
        "/v1/videos",
        data={"prompt": "x", "task": "continuation"},
        files={"input_reference": ("big.mp4", big, "video/mp4")},
    )
    error = _error(response, 413)
    assert f"at most {MAX_UPLOAD_BYTES} bytes" in error["message"]


def test_a_wrong_kind_of_file_for_the_field_is_refused(api: Service, image_png: Path) -> None:
    with image_png.open("rb") as f:
        response = api.http.post(
            "/v1/videos", data={"prompt": "x", "task": "stylize"}, files={"video": f}
        )
    assert "video: expected a video file; got image" in _error(response, 422)["message"]


def test_mask_box_must_lie_inside_the_video(api: Service, clip_mp4: Path) -> None:
    with clip_mp4.open("rb") as f:
        response = api.http.post(
            "/v1/videos/edits",
            data={"prompt": "x", "task": "inpaint", "mask_box": "0,0,100,10"},
            files={"video": f},
        )
    assert "reaches outside the input video (48x40)" in _error(response, 422)["message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/videos/video_missing"),
        ("DELETE", "/v1/videos/video_missing"),
        ("GET", "/v1/videos/video_missing/content"),
        ("POST", "/v1/videos/video_missing/cancel"),
        ("POST", "/v1/videos/video_missing/remix"),
    ],
)
def test_unknown_ids_get_404(api: Service, method: str, path: str) -> None:
    response = api.http.request(method, path, json={"prompt": "x"} if method == "POST" else None)
    assert "no video with id 'video_missing'" in _error(response, 404)["message"]


def test_list_rejects_bad_parameters(api: Service) -> None:
    assert "order" in _error(api.http.get("/v1/videos", params={"order": "up"}), 422)["message"]
    assert "limit" in _error(api.http.get("/v1/videos", params={"limit": 0}), 422)["message"]
    error = _error(api.http.get("/v1/videos", params={"after": "video_gone"}), 422)
    assert error["param"] == "after"


def test_content_of_an_unfinished_video_is_409(api: Service) -> None:
    # No worker is promised here: the video may stay queued; a 409 either way until done.
    video = api.http.post("/v1/videos", json={"prompt": "x"}).json()
    api.http.post(f"/v1/videos/{video['id']}/cancel")
    error = _error(api.http.get(f"/v1/videos/{video['id']}/content"), 409)
    assert "content is available once completed" in error["message"]
    assert (
        "only queued or in_progress"
        in _error(api.http.post(f"/v1/videos/{video['id']}/cancel"), 409)["message"]
    )


def test_the_sdk_raises_typed_errors(api: Service) -> None:
    client = api.openai()
    with pytest.raises(openai.UnprocessableEntityError, match="accepted sizes: 32x32"):
        client.videos.create(prompt="x", size="720x1280")
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve("video_missing")


def test_form_fields_in_the_sdk_s_nested_and_list_forms_are_read(api: Service) -> None:
    # The openai SDK sends extra_body lists as `name[]` and objects as `name[key]`.
    response = api.http.post(
        "/v1/videos/edits", data={"prompt": "x", "video[id]": "video_missing"}, files={}
    )
    assert "video: no video with id 'video_missing'" in _error(response, 404)["message"]
    response = api.http.post("/v1/videos", data={"prompt": "x", "mask_box[]": ["1", "2", "3", "4"]})
    assert "does not use mask_box" in _error(response, 422)["message"]


def test_an_image_can_come_as_a_data_url(api: Service, image_png: Path) -> None:
    import base64

    url = "data:image/png;base64," + base64.b64encode(image_png.read_bytes()).decode()
    response = api.http.post(
        "/v1/videos", json={"prompt": "x", "input_reference": {"image_url": url}}
    )
    assert response.status_code == 200, response.text
    video = response.json()
    assert video["task"] == "image_to_video" and video["status"] == "queued"
    api.http.post(f"/v1/videos/{video['id']}/cancel")
