"""One stack for the reliability tests: a redis-server with AOF (everysec, noeviction, as
`videopoet serve` runs it) that a test may kill and start again on the same port and folder,
the API, and worker processes on the tiny model, with a side-effect ledger
(tests/reliability/effects.py). Workers stay up from test to test while their settings fit
(`Stack.use_workers`): loading the model is most of a worker's start."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from redis import Redis
from redis.exceptions import RedisError

from core.store import Store, VideoRecord, VideoStatus
from tests.conftest import ApiServer, WorkerPool, free_port, start_api, wait_for
from tests.reliability.effects import LEDGER_ENV, read_ledger

# The workers most reliability tests use: batches of up to 8 stills.
WORKER_SETTINGS = {"VIDEOPOET_BATCH_SIZE": "8"}
# A video whose folder holds this file fails its encode: the stack's ffmpeg is a script that
# runs the real one, except for such a video, where it prints FFMPEG_FAILURE and exits 1.
FFMPEG_FAILS_MARKER = ".ffmpeg-fails"
FFMPEG_FAILURE = "Error while opening encoder (broken on purpose); Conversion failed!"


def failing_ffmpeg(folder: Path) -> Path:
    """The script VIDEOPOET_FFMPEG names in the stack (see FFMPEG_FAILS_MARKER)."""
    from models.media import ffmpeg_exe

    script = folder / "ffmpeg"
    script.write_text(
        "#!/bin/sh\n"
        'for arg in "$@"; do\n'
        '  case "$arg" in */*)\n'
        f'    if [ -e "$(dirname "$arg")/{FFMPEG_FAILS_MARKER}" ]; then\n'
        "      echo 'frame=    0 fps=0.0 q=0.0' >&2\n"
        f"      echo '{FFMPEG_FAILURE}' >&2\n"
        "      exit 1\n"
        "    fi;;\n"
        "  esac\n"
        "done\n"
        f'exec "{ffmpeg_exe()}" "$@"\n'
    )
    script.chmod(0o755)
    return script


@dataclass
class AofRedis:
    """A redis-server whose data lives in `folder` (AOF), restartable on the same port."""

    folder: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        from cli.main import redis_server_exe

        self.proc = subprocess.Popen(
            [
                redis_server_exe(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--maxmemory-policy",
                "noeviction",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = Redis.from_url(self.url)

        def up() -> bool:
            try:
                return bool(client.ping())
            except RedisError:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError("redis-server exited") from None
                return False

        try:
            wait_for(up, 20, "redis-server")
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown save; what survives is what the AOF already holds."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@dataclass
class Stack:
    redis_server: AofRedis
    api: ApiServer
    workers: WorkerPool
    artifact_dir: Path
    ledger: Path
    http: httpx.Client
    settings_of: dict[str, dict[str, str]] = field(default_factory=dict)  # worker -> overrides

    def use_workers(self, count: int, **overrides: str) -> list[str]:
        """`count` live workers started with `overrides` (others are stopped first)."""
        live = self.workers.alive()
        for name in live:
            if self.settings_of.get(name) != overrides:
                self.stop_worker(name)
        names = [n for n in self.workers.alive() if self.settings_of.get(n) == overrides]
        for name in names[count:]:
            self.stop_worker(name)
        names = names[:count]
        while len(names) < count:
            names.append(self.start_worker(**overrides))
        for name in names:
            self.workers.wait_ready(name)
        return names

    def start_worker(self, **overrides: str) -> str:
        name = self.workers.start(**overrides)
        self.settings_of[name] = overrides
        return name

    def stop_worker(self, name: str, timeout: float = 60) -> int:
        """SIGTERM (the worker finishes its batch), then its exit code."""
        proc = self.workers.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=timeout)

    def kill_worker(self, name: str) -> None:
        proc = self.workers.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def create(self, **body: object) -> str:
        response = self.http.post("/v1/videos", json=body)
        assert response.status_code == 200, response.text
        return response.json()["id"]

    def store(self) -> Store:
        return Store(
            Redis.from_url(self.redis_server.url, decode_responses=True), self.artifact_dir
        )

    def records(self, ids: list[str]) -> dict[str, VideoRecord]:
        store = self.store()
        try:
            return {i: r for i in ids if (r := store.get(i)) is not None}
        finally:
            store.redis.close()

    def wait_all(
        self, ids: list[str], statuses: set[VideoStatus], timeout: float
    ) -> dict[str, VideoRecord]:
        def done() -> dict[str, VideoRecord] | None:
            try:
                records = self.records(ids)
            except RedisError:  # Redis restarting
                return None
            finished = all(r.status in statuses for r in records.values())
            return records if len(records) == len(ids) and finished else None

        try:
            return wait_for(done, timeout, f"{len(ids)} videos to be {statuses}", interval=0.25)  # type: ignore[return-value]
        except TimeoutError as e:  # say which videos are left, and where they stand
            left: dict[str, object]
            try:
                left = {
                    i: (r.status.value, r.worker, r.attempts, r.progress)
                    for i, r in self.records(ids).items()
                    if r.status not in statuses
                }
            except RedisError as r:
                left = {"records": f"unreadable: {r}"}
            raise TimeoutError(f"{e}; not done (status, worker, attempts, progress): {left}") from e

    def ledger_events(self, event: str) -> list[str]:
        return [subject for e, subject, _ in read_ledger(self.ledger) if e == event]


@pytest.fixture(scope="package")
def stack(
    service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory, logs: Path
) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("reliability")
    (tmp_path / "redis").mkdir()
    redis_server = AofRedis(tmp_path / "redis")
    redis_server.start()
    artifact_dir = tmp_path / "artifacts"
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    ledger = tmp_path / "ledger.txt"
    env = {
        **service_env,
        "VIDEOPOET_REDIS_URL": redis_server.url,
        "VIDEOPOET_ARTIFACT_DIR": str(artifact_dir),
        "VIDEOPOET_PIPELINE_FACTORY": "tests.reliability.effects:load",
        "VIDEOPOET_CREATE_RATE_LIMIT_PER_MINUTE": "0",
        "VIDEOPOET_RATE_LIMIT_PER_MINUTE": "0",
        "VIDEOPOET_MAX_ACTIVE_JOBS_PER_KEY": "0",
        # Three SIGKILLs may hit one job more than twice (the default).
        "VIDEOPOET_MAX_RETRIES": "4",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "VIDEOPOET_FFMPEG": str(failing_ffmpeg(tmp_path)),
        LEDGER_ENV: str(ledger),
    }
    api = start_api(env, logs)
    workers = WorkerPool(env, logs, redis_server.url)
    http = httpx.Client(base_url=api.url, timeout=30)
    try:
        yield Stack(redis_server, api, workers, artifact_dir, ledger, http)
    finally:
        http.close()
        workers.stop_all()
        api.stop()
        redis_server.stop()
