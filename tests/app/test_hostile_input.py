"""Hostile input: schemathesis against the OpenAPI document (no 5xx, responses as
documented), and media made to hurt: bombs, lies about size and rate, broken files, path-like
names. Each gets a 4xx before anything is queued, nothing is written outside the artifact
folder, and the API keeps answering.

The fuzzed API serves `videopoet-1b`, whose queue no worker reads here, so the valid videos
schemathesis creates wait in the queue instead of keeping the session's worker busy.
"""

from __future__ import annotations

import json
import struct
import time
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.conftest import REPO, ApiServer, Service, start_api
from models import media

if sys.version_info < (3, 11):  # the backport hypothesis installs on Python 3.10
    from exceptiongroup import BaseExceptionGroup

FUZZ_MODEL = "videopoet-1b"
FUZZ_EXAMPLES = 40  # per operation; the whole run stays well within a minute


@pytest.fixture(scope="module")
def fuzz_api(service_env: dict[str, str], logs: Path) -> Iterator[ApiServer]:
    # No per-caller caps: every generated create reaches the intake's checks.
    server = start_api(
        service_env,
        logs,
        VIDEOPOET_MODEL=FUZZ_MODEL,
        VIDEOPOET_RATE_LIMIT_PER_MINUTE="0",
        VIDEOPOET_CREATE_RATE_LIMIT_PER_MINUTE="0",
        VIDEOPOET_MAX_ACTIVE_JOBS_PER_KEY="0",
    )
    yield server
    server.stop()


def test_the_api_answers_every_generated_request_as_documented(fuzz_api: ApiServer, redis) -> None:
    """Every operation of /openapi.json, FUZZ_EXAMPLES generated requests each (valid and
    not): no 5xx, and every status, content type and body as the document says."""
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    schema = schemathesis.openapi.from_url(fuzz_api.url + "/openapi.json")
    failures: dict[str, str] = {}
    # /readyz takes no input and answers 503 by design here (no worker serves the model).
    operations = [r.ok() for r in schema.get_all_operations() if r.ok().path != "/readyz"]
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=FUZZ_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case) -> None:
            case.call_and_validate(checks=checks, timeout=30)

        try:
            run()
        except (AssertionError, BaseExceptionGroup) as exc:  # every operation's, not the first
            failures[operation.label] = str(exc)[:2000]
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
    assert httpx.get(fuzz_api.url + "/healthz").status_code == 200


# --- files made to hurt ----------------------------------------------------------------------
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int, rows: int = 0) -> bytes:
    """A PNG whose header declares width x height; `rows` black rows of pixel data follow
    (compressed, they take almost nothing: a decompression bomb)."""
    compress = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * width)
    data = b"".join(compress.compress(row) for _ in range(rows)) + compress.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND", b"")
    )


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


@pytest.fixture
def fast_mp4(tmp_path: Path) -> Path:
    """A real H.264 mp4 at 1000 frames per second."""
    return media.encode_video(tmp_path / "fast.mp4", np.zeros((20, 16, 16, 3), np.uint8), 1000.0)


def _post(api: Service, field: str, name: str, content: bytes, content_type: str, **form):
    data = {"prompt": "x", **form}
    return api.http.post("/v1/videos", data=data, files={field: (name, content, content_type)})


@pytest.mark.parametrize(
    ("name", "make", "says"),
    [
        # 186 kB that inflate to 192 MB of pixels: refused before a pixel is decoded.
        ("bomb.png", lambda: png_declaring(8000, 8000, rows=8000), "8000x8000"),
        ("huge.png", lambda: png_declaring(100_000, 100_000, rows=2), "cannot be decoded"),
        (
            "huge.mp4",  # a raw YUV4MPEG2 stream declaring 60000x60000 frames, named mp4
            lambda: b"YUV4MPEG2 W60000 H60000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + bytes(4096),
            "cannot be decoded",
        ),
        ("wide.png", lambda: png_declaring(5000, 8, rows=8), "5000x8 is too large"),
    ],
)
def test_pictures_that_declare_huge_sizes_are_refused_fast(
    api: Service, name: str, make, says: str
) -> None:
    started = time.monotonic()
    response = _post(api, "input_reference", name, make(), "application/octet-stream")
    assert says in _error(response, 422)["message"]
    assert time.monotonic() - started < 15
    assert api.http.get("/v1/videos").json()["data"] == []


def test_absurd_frame_rates_are_refused(api: Service, fast_mp4: Path) -> None:
    response = _post(api, "video", "fast.mp4", fast_mp4.read_bytes(), "video/mp4", task="stylize")
    error = _error(response, 422)
    assert "1000 frames per second is too many" in error["message"] and error["param"] == "video"


@pytest.mark.parametrize(
    ("field", "name", "content", "content_type", "status", "says"),
    [
        ("video", "clip.mp4", png_declaring(16, 16, rows=16), "video/mp4", 422, "expected a video"),
        ("image", "photo.png", b"GIF89a" + bytes(64), "image/png", 422, "cannot be decoded"),
        ("video", "clip.exe", b"MZ" + bytes(64), "application/x-msdownload", 415, "unsupported"),
        ("audio", "song.mp3", b"ID3" + bytes(10), "audio/mpeg", 422, "audio: "),
        ("input_reference", "a.mp4", b"", "video/mp4", 422, "empty (0 bytes)"),
    ],
)
def test_files_whose_name_or_type_lies_are_refused(
    api: Service, field: str, name: str, content: bytes, content_type: str, status: int, says: str
) -> None:
    response = _post(api, field, name, content, content_type, task="stylize")
    assert says in _error(response, status)["message"]
    assert api.http.get("/v1/videos").json()["data"] == []


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd.mp4",
        "..\\..\\..\\windows\\clip.mp4",
        "/tmp/videopoet-escape.mp4",
        "clip.mp4/../../../../videopoet-escape.mp4",
        "x" * 300 + ".mp4",  # longer than a file name may be
    ],
)
def test_path_like_file_names_never_leave_the_video_folder(
    api: Service, clip_mp4: Path, name: str
) -> None:
    before = set(api.artifact_dir.rglob("*"))
    good = _post(api, "video", name, clip_mp4.read_bytes(), "video/mp4", task="continuation")
    bad = _post(api, "video", name, b"\0" * 999, "video/mp4", task="continuation")
    assert good.status_code == 200, good.text
    assert _error(bad, 422)["param"] == "video"
    video_id = good.json()["id"]
    api.http.post(f"/v1/videos/{video_id}/cancel")
    new = sorted(p.relative_to(api.artifact_dir) for p in set(api.artifact_dir.rglob("*")) - before)
    assert new == [Path(video_id), Path(video_id, "input_video.mp4")]
    # Nor anywhere the name points, from any folder it could be taken relative to.
    as_path = Path(name.replace("\\", "/"))
    for root in (api.artifact_dir, api.artifact_dir / video_id, REPO):
        assert not _exists((root / as_path).resolve()) and not _exists(root / as_path.name)


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long to be a file
        return False


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/videos/..%2F..%2Fetc%2Fpasswd"),
        ("GET", "/v1/videos/..%2F..%2Fetc/content"),
        ("DELETE", "/v1/videos/..%2Fvideo_0"),
        ("GET", "/v1/videos/video_%00/content"),
    ],
)
def test_path_like_ids_are_404(api: Service, method: str, path: str) -> None:
    response = api.http.request(method, path)
    assert response.status_code == 404, response.text


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "application/json"),
        (b'{"prompt": "x", "mask_box": [1, 2, 3, ' + b"9" * 5000 + b"]}", "application/json"),
        (b'{"prompt": "x", "seed": 1e400}', "application/json"),
        (b'{"prompt": "x", "seconds": "NaN"}', "application/json"),
        (b'{"prompt": "x", "seconds": "Infinity"}', "application/json"),
        (b"\xff\xfe not utf-8", "application/json"),
        (
            b"prompt=x&" + b"&".join(b"f%d=1" % i for i in range(500)),
            "application/x-www-form-urlencoded",
        ),
        (
            b"--b\r\nContent-Disposition: form-data; name=prompt\r\n\r\nx",
            "multipart/form-data; boundary=b",
        ),
    ],
)
def test_malformed_bodies_get_4xx(api: Service, content: bytes, content_type: str) -> None:
    response = api.http.post("/v1/videos", content=content, headers={"content-type": content_type})
    assert 400 <= response.status_code < 500, response.text
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert api.http.get("/healthz").status_code == 200


def test_the_queued_job_is_json_naming_the_job_function(
    fuzz_api: ApiServer, redis_url: str, redis
) -> None:
    from redis import Redis

    video = httpx.post(fuzz_api.url + "/v1/videos", json={"prompt": "json only"}).json()
    raw = Redis.from_url(redis_url).hget(f"rq:job:{video['id']}", "data")
    assert raw is not None
    payload = json.loads(zlib.decompress(raw))  # a pickle would not parse
    assert payload[0] == "workers.jobs.run_video" and payload[2] == [video["id"]]
