"""API keys, isolation between keys, limits and backpressure, Idempotency-Key: each against
real API processes on the session's Redis.

Two extra APIs run here: one with keys on the tiny model (the session's worker runs its jobs),
and two processes with low limits serving `videopoet-1b`, whose queue no worker reads, so
queued videos stay queued and the counts are exact.
"""

from __future__ import annotations

import concurrent.futures
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.keys import hash_key
from core.store import VideoStatus
from tests.conftest import REPO, ApiServer, Service, start_api

ALICE, BOB, CAROL = "vp-alice-key", "vp-bob-key", "vp-carol-key"
# Bob's key is configured by its hash only: the server never sees it in the clear.
KEYS = f"{ALICE}, sha256:{hash_key(BOB)}"
IDLE_MODEL = "videopoet-1b"  # no worker serves it here
RATE_PER_MINUTE = 30
CREATES_PER_MINUTE = 5
ACTIVE_PER_KEY = 2
QUEUE_LENGTH = 4


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


def _everything_stored(url: str) -> str:
    """Every key and value in Redis, as text."""
    from redis import Redis

    redis = Redis.from_url(url)
    parts = []
    for key in redis.scan_iter("*"):
        kind = redis.type(key).decode()
        value = {
            "string": lambda k: redis.get(k),
            "hash": lambda k: redis.hgetall(k),
            "zset": lambda k: redis.zrange(k, 0, -1),
            "set": lambda k: redis.smembers(k),
            "list": lambda k: redis.lrange(k, 0, -1),
        }.get(kind, lambda k: "")(key)
        parts.append(f"{key!r} {value!r}")
    redis.close()
    return "\n".join(parts)


def _raw_post(url: str, head: str, chunks: list[bytes]) -> tuple[int, str]:
    """POST with hand-made headers and body chunks (sent as they are), then read the answer:
    the status and the body. The body is left unfinished on purpose when the caller stops."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"POST /v1/videos HTTP/1.1\r\nHost: {host}\r\n{head}\r\n".encode())
        for chunk in chunks:
            sock.sendall(chunk)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < 10:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1].decode(errors="replace")


@pytest.fixture(scope="module")
def keyed(service_env: dict[str, str], logs: Path) -> Iterator[ApiServer]:
    server = start_api(service_env, logs, VIDEOPOET_API_KEYS=KEYS)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def limited(service_env: dict[str, str], logs: Path) -> Iterator[list[ApiServer]]:
    """Two API processes with the same low limits on one Redis."""
    settings = {
        "VIDEOPOET_MODEL": IDLE_MODEL,
        "VIDEOPOET_API_KEYS": f"{ALICE},{BOB},{CAROL}",
        "VIDEOPOET_RATE_LIMIT_PER_MINUTE": str(RATE_PER_MINUTE),
        "VIDEOPOET_CREATE_RATE_LIMIT_PER_MINUTE": str(CREATES_PER_MINUTE),
        "VIDEOPOET_MAX_ACTIVE_JOBS_PER_KEY": str(ACTIVE_PER_KEY),
        "VIDEOPOET_MAX_QUEUE_LENGTH": str(QUEUE_LENGTH),
    }
    servers = [start_api(service_env, logs, **settings) for _ in range(2)]
    yield servers
    for server in servers:
        server.stop()


# --- keys ------------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.com"])
def test_an_open_api_refuses_to_listen_beyond_loopback(host: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDEOPOET_")}
    for command in ("api", "serve"):
        result = subprocess.run(
            [sys.executable, "-m", "cli.main", command, "--host", host, "--model", "tiny"],
            check=False,
            env={**env, "PYTHONPATH": str(REPO)},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr
        assert f"refusing to listen on {host} without API keys" in result.stderr
        assert "VIDEOPOET_API_KEYS" in result.stderr


def test_keys_are_required_and_compared_by_hash(keyed: ApiServer, redis, redis_url: str) -> None:
    missing = httpx.get(keyed.url + "/v1/videos")
    error = _error(missing, 401)
    assert error["code"] == "invalid_api_key" and "Authorization: Bearer" in error["message"]
    assert missing.headers["www-authenticate"] == "Bearer"
    assert _error(httpx.get(keyed.url + "/v1/videos", headers=_auth("vp-guess")), 401)
    assert _error(httpx.get(keyed.url + "/v1/videos", headers=_auth(hash_key(BOB))), 401)
    # A key given in the clear, and one given by its hash alone, both work.
    assert httpx.get(keyed.url + "/v1/videos", headers=_auth(ALICE)).status_code == 200
    assert httpx.get(keyed.url + "/v1/videos", headers=_auth(BOB)).status_code == 200
    # Probes stay open.
    assert httpx.get(keyed.url + "/healthz").status_code == 200
    # Nothing stored in Redis names a key in the clear.
    made = httpx.post(keyed.url + "/v1/videos", headers=_auth(ALICE), json={"prompt": "[raise]"})
    assert made.status_code == 200
    stored = _everything_stored(redis_url)
    assert made.json()["id"] in stored and ALICE not in stored


def test_a_key_sees_and_touches_only_its_own_videos(
    keyed: ApiServer, service: Service, tmp_path: Path
) -> None:
    import openai

    alice = openai.OpenAI(base_url=keyed.url + "/v1", api_key=ALICE, max_retries=0)
    bob = openai.OpenAI(base_url=keyed.url + "/v1", api_key=BOB, max_retries=0)
    video = alice.videos.create_and_poll(
        prompt="mine", extra_body={"task": "text_to_image"}, poll_interval_ms=100
    )
    assert video.status == "completed", video
    theirs = alice.videos.create(prompt="[slow] still running", extra_body={"seed": 1})

    for vid in (video.id, theirs.id):
        with pytest.raises(openai.NotFoundError):
            bob.videos.retrieve(vid)
        with pytest.raises(openai.NotFoundError):
            bob.videos.download_content(vid)
        with pytest.raises(openai.NotFoundError):
            bob.videos.remix(vid, prompt="steal")
        with pytest.raises(openai.NotFoundError):
            bob.videos.delete(vid)
        for method, path in (("POST", "cancel"), ("GET", "events")):
            response = httpx.request(
                method, f"{keyed.url}/v1/videos/{vid}/{path}", headers=_auth(BOB)
            )
            assert _error(response, 404)["message"] == f"no video with id {vid!r}"
    # Nor as an input by reference.
    response = httpx.post(
        keyed.url + "/v1/videos/extensions",
        headers=_auth(BOB),
        json={"prompt": "x", "video": {"id": video.id}},
    )
    assert _error(response, 404)["param"] == "video"
    assert bob.videos.list().data == []
    # Alice still has both, untouched, and can do everything with them.
    assert {v.id for v in alice.videos.list().data} == {video.id, theirs.id}
    assert alice.videos.retrieve(theirs.id).status in ("queued", "in_progress")
    cancelled = httpx.post(f"{keyed.url}/v1/videos/{theirs.id}/cancel", headers=_auth(ALICE))
    assert cancelled.json()["status"] == "cancelled"
    alice.videos.download_content(video.id, variant="thumbnail").write_to_file(tmp_path / "t.webp")
    assert (tmp_path / "t.webp").stat().st_size > 0
    assert alice.videos.delete(video.id).deleted
    assert [v.id for v in alice.videos.list().data] == [theirs.id]


# --- Idempotency-Key -------------------------------------------------------------------------
def test_idempotency_key_same_body_same_video_other_body_409(
    limited: list[ApiServer], redis, clip_mp4: Path
) -> None:
    url = limited[0].url
    key = {"Idempotency-Key": "retry-me", **_auth(ALICE)}
    body = {"prompt": "once", "seed": 7}
    first = httpx.post(url + "/v1/videos", json=body, headers=key)
    assert first.status_code == 200, first.text
    again = httpx.post(limited[1].url + "/v1/videos", json=body, headers=key)  # other process
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    error = _error(httpx.post(url + "/v1/videos", json={**body, "seed": 8}, headers=key), 409)
    assert error["code"] == "idempotency_conflict" and first.json()["id"] in error["message"]
    # The same key from another API key is another request altogether.
    bobs = httpx.post(url + "/v1/videos", json=body, headers={**key, **_auth(BOB)})
    assert bobs.status_code == 200 and bobs.json()["id"] != first.json()["id"]
    # Uploads count by their bytes.
    upload = {"Idempotency-Key": "with-file", **_auth(CAROL)}
    form = {"prompt": "x", "task": "continuation"}
    a = httpx.post(
        url + "/v1/videos", data=form, files={"video": clip_mp4.open("rb")}, headers=upload
    )
    b = httpx.post(
        url + "/v1/videos", data=form, files={"video": clip_mp4.open("rb")}, headers=upload
    )
    assert a.status_code == 200 and b.json()["id"] == a.json()["id"]
    other = ("clip.mp4", clip_mp4.read_bytes()[:-10], "video/mp4")
    c = httpx.post(url + "/v1/videos", data=form, files={"video": other}, headers=upload)
    assert _error(c, 409)["code"] == "idempotency_conflict"
    # A failed request does not hold its key: fixing the body and retrying works.
    bad = {"Idempotency-Key": "fix-me", **_auth(CAROL)}
    assert _error(
        httpx.post(url + "/v1/videos", json={"prompt": "x", "size": "1x1"}, headers=bad), 422
    )
    assert httpx.post(url + "/v1/videos", json={"prompt": "x"}, headers=bad).status_code == 200


def test_concurrent_retries_with_one_key_make_one_video(limited: list[ApiServer], redis) -> None:
    headers = {"Idempotency-Key": "racing", **_auth(ALICE)}

    def create(i: int) -> httpx.Response:
        url = limited[i % 2].url
        return httpx.post(url + "/v1/videos", json={"prompt": "race"}, headers=headers, timeout=30)

    with concurrent.futures.ThreadPoolExecutor(CREATES_PER_MINUTE) as pool:
        responses = list(pool.map(create, range(CREATES_PER_MINUTE)))
    ok = {r.json()["id"] for r in responses if r.status_code == 200}
    assert len(ok) == 1, [r.text for r in responses]
    # The others were told the first is still being made (409), never given another video.
    assert all(r.status_code in (200, 409) for r in responses), [r.text for r in responses]
    listed = httpx.get(limited[0].url + "/v1/videos", headers=_auth(ALICE)).json()["data"]
    assert [v["id"] for v in listed] == list(ok)


# --- limits ----------------------------------------------------------------------------------
def test_request_rate_per_key_holds_across_api_processes(limited: list[ApiServer], redis) -> None:
    statuses = []
    for i in range(RATE_PER_MINUTE + 5):
        response = httpx.get(limited[i % 2].url + "/v1/videos", headers=_auth(ALICE))
        statuses.append(response.status_code)
        if response.status_code == 429:
            error = response.json()["error"]
            assert error["code"] == "rate_limit_exceeded"
            assert "VIDEOPOET_RATE_LIMIT_PER_MINUTE" in error["message"]
            assert 1 <= int(response.headers["retry-after"]) <= 3  # a slot frees every 2 s
            break
    # The budget refills one request per 2 s, so a slow run may squeeze one more in.
    assert RATE_PER_MINUTE <= statuses.count(200) <= RATE_PER_MINUTE + 2
    assert statuses[-1] == 429
    # Another key has its own budget.
    assert httpx.get(limited[0].url + "/v1/videos", headers=_auth(BOB)).status_code == 200


def test_active_videos_per_key_then_creates_per_minute_then_queue_length(
    limited: list[ApiServer], redis
) -> None:
    def create(key: str, i: int) -> httpx.Response:
        url = limited[i % 2].url
        return httpx.post(url + "/v1/videos", json={"prompt": f"{key} {i}"}, headers=_auth(key))

    made = [create(ALICE, i) for i in range(ACTIVE_PER_KEY)]
    assert all(r.status_code == 200 for r in made)
    over = create(ALICE, 9)
    error = _error(over, 429)
    assert error["code"] == "too_many_active_videos" and "at most 2 at once" in error["message"]
    assert int(over.headers["retry-after"]) > 0
    # Cancelling one frees its slot.
    first = made[0].json()["id"]
    assert (
        httpx.post(f"{limited[0].url}/v1/videos/{first}/cancel", headers=_auth(ALICE)).json()[
            "status"
        ]
        == VideoStatus.cancelled.value
    )
    assert create(ALICE, 10).status_code == 200
    # Creates per minute: Alice has made 5 attempts (all counted), the 6th is the last.
    assert _error(create(ALICE, 11), 429)["code"] == "too_many_active_videos"
    rate = create(ALICE, 12)
    assert "VIDEOPOET_CREATE_RATE_LIMIT_PER_MINUTE" in _error(rate, 429)["message"]
    # Queue length: 2 of Alice's wait; Bob fills it to 4; Carol is told to come back later.
    assert [create(BOB, i).status_code for i in range(2)] == [200, 200]
    full = create(CAROL, 0)
    error = _error(full, 503)
    assert error["code"] == "queue_full" and "VIDEOPOET_MAX_QUEUE_LENGTH" in error["message"]
    assert int(full.headers["retry-after"]) > 0
    listed = httpx.get(limited[0].url + "/v1/videos", headers=_auth(CAROL)).json()["data"]
    assert listed == []


def test_bodies_over_the_cap_get_413_even_without_content_length(api: Service) -> None:
    from app.intake import max_body_bytes
    from tests.conftest import MAX_UPLOAD_BYTES

    limit = max_body_bytes(api_settings(MAX_UPLOAD_BYTES))
    block = b"x" * 65536
    # Chunked (no Content-Length): refused once the body streams past the cap.
    chunks = [b'c\r\n{"prompt": "\r\n']
    chunks += [b"10000\r\n" + block + b"\r\n"] * (limit // len(block) + 2)
    status, body = _raw_post(
        api.url, "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n", chunks
    )
    assert status == 413 and "request_too_large" in body
    # A declared length over the cap is refused before a byte of the body is read.
    status, body = _raw_post(
        api.url, f"Content-Type: application/json\r\nContent-Length: {10**12}\r\n", []
    )
    assert status == 413 and "request_too_large" in body
    assert api.http.get("/v1/videos").json()["data"] == []
    # Just under the cap is read (and then judged on its content).
    ok = api.http.post("/v1/videos", json={"prompt": "x" * (limit - 100)})
    assert ok.status_code == 422 and "prompt" in ok.json()["error"]["message"]


def api_settings(max_upload_bytes: int):
    from core.config import Settings

    return Settings(model="tiny", max_upload_bytes=max_upload_bytes)
