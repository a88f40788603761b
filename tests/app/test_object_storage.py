"""The service on object storage (VIDEOPOET_ARTIFACT_URL=s3://...) end to end: the official SDK
against a real API and worker, SeaweedFS as the bucket (tests/s3server.py).

The S3 stacks run on Redis databases of their own (1 and 2), so the session's folder-store
worker never takes their jobs; the API and the worker are given different, missing artifact
folders, to show that nothing passes through a shared disk.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from redis import Redis

from core.store import Store, VideoRecord, VideoStatus
from tests.conftest import ApiServer, WorkerPool, start_api, wait_for
from tests.s3server import S3Server

ALICE, BOB = "vp-alice-object-storage", "vp-bob-object-storage"


@dataclass
class S3Stack:
    api: ApiServer
    workers: WorkerPool
    s3: S3Server
    prefix: str
    env: dict[str, str]
    redis: Redis
    folders: list[Path]  # artifact folders the processes were given: never made

    def client(self, url: str | None = None, key: str = "unused") -> openai.OpenAI:
        return openai.OpenAI(base_url=(url or self.api.url) + "/v1", api_key=key, max_retries=0)

    def record(self, video_id: str) -> VideoRecord:
        record = Store(self.redis, Path("unused")).get(video_id)
        assert record is not None
        return record

    def wait_status(self, video_id: str, statuses: set[VideoStatus]) -> VideoRecord:
        def reached() -> VideoRecord | None:
            record = self.record(video_id)
            return record if record.status in statuses else None

        return wait_for(reached, 120, f"{video_id} to be {statuses}", interval=0.1)  # type: ignore[return-value]

    def objects(self, video_id: str) -> list[str]:
        """The names stored under one video, from the bucket itself."""
        folder = f"{self.prefix}/{video_id}/"
        return [k[len(folder) :] for k in self.s3.keys(self.prefix) if k.startswith(folder)]


def _stack(
    s3_server: S3Server,
    service_env: dict[str, str],
    logs: Path,
    redis_url: str,
    tmp: Path,
    db: int,
    **settings: str,
) -> Iterator[S3Stack]:
    prefix = s3_server.new_prefix()
    url = f"{redis_url.rsplit('/', 1)[0]}/{db}"
    env = {**service_env, **s3_server.env(prefix, **settings), "VIDEOPOET_REDIS_URL": url}
    redis = Redis.from_url(url, decode_responses=True)
    redis.flushdb()
    folders = [tmp / "api-folder", tmp / "worker-folder"]
    api = start_api(env, logs, VIDEOPOET_ARTIFACT_DIR=str(folders[0]))
    workers = WorkerPool(env, logs, url)
    try:
        workers.wait_ready(workers.start(VIDEOPOET_ARTIFACT_DIR=str(folders[1])))
        yield S3Stack(api, workers, s3_server, prefix, env, redis, folders)
    finally:
        workers.stop_all()
        api.stop()
        redis.close()


@pytest.fixture(scope="module")
def stack(
    s3_server: S3Server,
    service_env: dict[str, str],
    logs: Path,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[S3Stack]:
    """An API and a worker on S3 with good credentials."""
    tmp = tmp_path_factory.mktemp("s3-stack")
    yield from _stack(s3_server, service_env, logs, redis_url, tmp, db=1)


@pytest.fixture(scope="module")
def refused(
    s3_server: S3Server,
    service_env: dict[str, str],
    logs: Path,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[S3Stack]:
    """An API and a worker whose secret key the bucket refuses."""
    tmp = tmp_path_factory.mktemp("s3-refused")
    yield from _stack(
        s3_server, service_env, logs, redis_url, tmp, db=2, secret_key="the-wrong-secret"
    )


def test_the_sdk_round_trip_keeps_every_file_in_the_bucket(
    stack: S3Stack, image_png: Path, tmp_path: Path
) -> None:
    client = stack.client()
    with image_png.open("rb") as f:
        video = client.videos.create_and_poll(
            prompt="it moves", input_reference=f, poll_interval_ms=100
        )
    assert video.status == "completed", video.error
    assert stack.objects(video.id) == [
        "input_input_reference.png",
        "spritesheet.jpg",
        "thumbnail.webp",
        "video.mp4",
    ]
    s3 = stack.s3.client()

    def stored(name: str, video_id: str = video.id) -> bytes:
        key = f"{stack.prefix}/{video_id}/{name}"
        return s3.get_object(Bucket=stack.s3.bucket, Key=key)["Body"].read()

    mp4 = client.videos.download_content(video.id).read()
    assert mp4 == stored("video.mp4") and mp4[4:8] == b"ftyp"
    assert client.videos.download_content(video.id, variant="thumbnail").read() == stored(
        "thumbnail.webp"
    )
    part = httpx.get(
        f"{stack.api.url}/v1/videos/{video.id}/content", headers={"Range": "bytes=10-109"}
    )
    assert part.status_code == 206 and part.content == mp4[10:110]
    assert part.headers["content-range"] == f"bytes 10-109/{len(mp4)}"
    beyond = httpx.get(
        f"{stack.api.url}/v1/videos/{video.id}/content", headers={"Range": f"bytes={len(mp4)}-"}
    )
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(mp4)}"

    # A remix reads the first video's output from the bucket (at intake and in the worker).
    extension = client.videos.remix(video.id, prompt="the same, in blue")
    done = client.videos.poll(extension.id, poll_interval_ms=100)
    assert done.status == "completed", done.error
    assert "input_video.mp4" in stack.objects(extension.id)
    assert stored("input_video.mp4", extension.id) == mp4

    for video_id in (video.id, extension.id):
        assert client.videos.delete(video_id).deleted
        assert stack.objects(video_id) == []
    assert not any(folder.exists() for folder in stack.folders)  # no shared disk was used


def test_a_presigned_download_redirects_and_expires(stack: S3Stack) -> None:
    presigning = start_api(
        stack.env,
        stack.api.log.parent,
        VIDEOPOET_S3_PRESIGN="1",
        VIDEOPOET_S3_PRESIGN_SECONDS="3",
        VIDEOPOET_API_KEYS=f"{ALICE},{BOB}",
    )
    try:
        alice = stack.client(presigning.url, ALICE)
        video = alice.videos.create_and_poll(
            prompt="a still", extra_body={"task": "text_to_image"}, poll_interval_ms=100
        )
        assert video.status == "completed", video.error
        content = f"{presigning.url}/v1/videos/{video.id}/content"
        answer = httpx.get(content, headers={"Authorization": f"Bearer {ALICE}"})
        assert answer.status_code == 302 and answer.headers["cache-control"] == "no-store"
        location = answer.headers["location"]
        assert location.startswith(stack.s3.endpoint) and "X-Amz-Signature=" in location
        mp4 = httpx.get(location)  # no key: the signature in the URL is the permission
        assert mp4.status_code == 200 and mp4.content[4:8] == b"ftyp"
        # The SDK follows the redirect (its key stays behind: another origin).
        png = alice.videos.download_content(video.id, extra_query={"variant": "image"}).read()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert alice.videos.download_content(video.id).read() == mp4.content

        # Isolation as before: another key learns nothing, not even a URL.
        bob = httpx.get(content, headers={"Authorization": f"Bearer {BOB}"})
        assert bob.status_code == 404 and "location" not in bob.headers
        assert httpx.get(content).status_code == 401
        time.sleep(4)
        assert httpx.get(location).status_code == 403  # expired
    finally:
        presigning.stop()


def test_refused_credentials_make_readyz_503_and_fail_the_jobs_that_touch_the_bucket(
    refused: S3Stack, image_png: Path
) -> None:
    secret = "the-wrong-secret"
    ready = httpx.get(refused.api.url + "/readyz")
    assert ready.status_code == 503
    reason = ready.json()["reason"]
    assert "artifact store" in reason and "refused" in reason and refused.prefix in reason
    assert secret not in ready.text and refused.s3.secret_key not in ready.text

    client = refused.client()
    with image_png.open("rb") as f, pytest.raises(openai.InternalServerError) as caught:
        client.videos.create(prompt="it moves", input_reference=f)
    error = caught.value.body
    assert caught.value.status_code == 503 and error["code"] == "storage_unavailable"
    assert "refused" in error["message"] and secret not in str(error)

    # The rest goes on: reads work, and a job that needs no input runs until it must store.
    assert client.videos.list().data == []
    ids = [client.videos.create(prompt=f"a ball {i}").id for i in range(2)]
    for video_id in ids:
        failed = refused.wait_status(video_id, {VideoStatus.failed})
        assert failed.error is not None and failed.error.code == "storage_error"
        assert "refused" in failed.error.message and refused.prefix in failed.error.message
        assert secret not in failed.error.message
    assert refused.workers.alive()  # the worker failed those jobs and goes on
    for log in (refused.api.log, *refused.workers.log_dir.glob("test-worker-*.log")):
        assert secret not in log.read_text(errors="replace")


def test_a_character_lives_in_the_bucket_and_conditions_a_video(
    stack: S3Stack, image_png: Path
) -> None:
    client = stack.client()
    with image_png.open("rb") as f:  # the SDK sends `video`; an image is a character too
        character = client.videos.create_character(name="Green", video=f)
    assert character.id and character.model_extra["kind"] == "image"
    assert stack.objects(character.id) == ["reference.png"]

    video = client.videos.create_and_poll(
        prompt="it moves",
        extra_body={"input_reference": {"character_id": character.id}},
        poll_interval_ms=100,
    )
    assert video.status == "completed", video.error
    assert video.model_extra["task"] == "image_to_video"
    assert "input_input_reference.png" in stack.objects(video.id)

    gone = httpx.delete(f"{stack.api.url}/v1/videos/characters/{character.id}")
    assert gone.status_code == 200 and stack.objects(character.id) == []
    assert "input_input_reference.png" in stack.objects(video.id)  # the video's own copy
