"""Sizes through the service: a checkpoint with a super-resolution stage serves its LM's size
and twice it (the larger by default), over real HTTP, Redis, a worker process and ffmpeg."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from redis import Redis

from models import media
from tests.conftest import WorkerPool, start_api
from tests.models.sr_checkpoint import tiny_sr_checkpoint


@pytest.fixture(scope="module")
def sr_service(
    service_env: dict[str, str],
    logs: Path,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """An API and a worker serving the tiny checkpoint with an SR stage (Redis database 8)."""
    folder = tiny_sr_checkpoint(tmp_path_factory.mktemp("tiny-sr"))
    url = f"{redis_url.rsplit('/', 1)[0]}/8"
    redis = Redis.from_url(url, decode_responses=True)
    redis.flushdb()
    env = {**service_env, "VIDEOPOET_REDIS_URL": url, "VIDEOPOET_MODEL": str(folder)}
    artifacts = str(tmp_path_factory.mktemp("sr-artifacts"))
    api = start_api(env, logs, VIDEOPOET_ARTIFACT_DIR=artifacts)
    workers = WorkerPool(env, logs, url, model="tiny-sr")
    try:
        workers.wait_ready(workers.start(VIDEOPOET_ARTIFACT_DIR=artifacts))
        yield api.url
    finally:
        workers.stop_all()
        api.stop()
        redis.close()


def _size_of(content: bytes, tmp: Path) -> tuple[int, int]:
    path = tmp / "out.mp4"
    path.write_bytes(content)
    info = media.probe(path)
    return info.width, info.height


def test_the_default_is_the_largest_size_and_the_smaller_one_is_there_too(
    sr_service: str, tmp_path: Path
) -> None:
    client = openai.OpenAI(base_url=sr_service + "/v1", api_key="unused", max_retries=0)
    big = client.videos.create_and_poll(prompt="a red circle moves left", poll_interval_ms=200)
    assert big.status == "completed" and big.size == "64x64"
    assert _size_of(client.videos.download_content(big.id).read(), tmp_path) == (64, 64)
    small = client.videos.create_and_poll(
        prompt="a red circle moves left", size="32x32", poll_interval_ms=200
    )
    assert small.status == "completed" and small.size == "32x32"
    assert _size_of(client.videos.download_content(small.id).read(), tmp_path) == (32, 32)
    # the playground offers both, the larger first
    config = httpx.get(sr_service + "/playground/config.json").json()
    assert config["size"] == "64x64" and config["sizes"] == ["32x32", "64x64"]


def test_a_size_it_does_not_make_gets_422_naming_the_sizes_it_does(sr_service: str) -> None:
    for size in ("128x128", "32x64"):
        r = httpx.post(sr_service + "/v1/videos", json={"prompt": "x", "size": size})
        assert r.status_code == 422
        error = r.json()["error"]
        assert error["param"] == "size" and error["code"] == "unsupported_size"
        assert "accepted sizes: 32x32, 64x64" in error["message"]
