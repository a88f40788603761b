"""A real service on loopback for the service benchmarks (throughput.py, latency.py,
arrivals.py).

An embedded `redis-server` (the CLI's own `start_embedded_redis`), then `videopoet serve
--workers 1` pointed at it, so the benchmark reads the records (their stage timings) from the
same Redis the service writes. Everything lives in a temporary folder and on free ports; it is
all stopped on exit. Not a benchmark itself.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import httpx
from redis import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cli.main import _free_port, start_embedded_redis  # noqa: E402
from core.config import default_model  # noqa: E402
from core.store import FINISHED, Store, VideoRecord  # noqa: E402

STARTUP_SECONDS = 300.0  # model load under load, on two shared cores
POLL_SECONDS = 0.02


@dataclass
class Service:
    url: str
    store: Store
    log: Path

    def create(self, http: httpx.Client, **fields: Any) -> tuple[str, float]:
        """POST /v1/videos; the id and the seconds the API took to answer."""
        started = time.perf_counter()
        response = http.post(self.url + "/v1/videos", json=fields)
        response.raise_for_status()
        return response.json()["id"], time.perf_counter() - started

    def wait(self, video_ids: list[str], timeout: float) -> dict[str, tuple[VideoRecord, float]]:
        """Each video's finished record and the perf_counter() time it was first seen finished."""
        done: dict[str, tuple[VideoRecord, float]] = {}
        deadline = time.monotonic() + timeout
        while len(done) < len(video_ids):
            for video_id in video_ids:
                if video_id in done:
                    continue
                record = self.store.get(video_id)
                if record is not None and record.status in FINISHED:
                    done[video_id] = (record, time.perf_counter())
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(video_ids) - len(done)} videos unfinished after {timeout:g} s"
                )
            time.sleep(POLL_SECONDS)
        return done


@contextmanager
def running_service(
    model: str,
    *,
    batch_size: int | None,
    torch_threads: int = 0,
    batch_window: float | None = None,
    log_name: str = "serve",
    extra_env: dict[str, str] | None = None,
) -> Iterator[Service]:
    """Redis + `videopoet serve --workers 1` (API and one worker) until the block ends.

    batch_size None leaves the service's default; extra_env adds or overrides VIDEOPOET_*
    settings of the API and the worker (e.g. VIDEOPOET_SCHEDULER, rate limits)."""
    folder = Path(tempfile.mkdtemp(prefix="videopoet-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDEOPOET_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        {
            "VIDEOPOET_DATA_DIR": str(folder / "data"),
            "VIDEOPOET_MODEL": model,
            "VIDEOPOET_TORCH_THREADS": str(torch_threads),
            "VIDEOPOET_WORKER_METRICS_PORT": str(_free_port()),
            "VIDEOPOET_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
    )
    if batch_size is not None:
        env["VIDEOPOET_BATCH_SIZE"] = str(batch_size)
    if batch_window is not None:
        env["VIDEOPOET_BATCH_WINDOW_SECONDS"] = str(batch_window)
    env.update(extra_env or {})
    redis_proc, redis_url = start_embedded_redis(folder / "redis", env)
    env["VIDEOPOET_REDIS_URL"] = redis_url
    port = _free_port()
    log = folder / f"{log_name}.log"
    serve = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve", "--workers", "1", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    redis = Redis.from_url(redis_url, decode_responses=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, serve, log)
        yield Service(url, Store(redis, folder / "data" / "artifacts"), log)
    finally:
        redis.close()
        if serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(serve.pid, signal.SIGKILL)
                serve.wait()
        redis_proc.terminate()
        redis_proc.wait(timeout=30)


def _wait_ready(url: str, serve: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        if serve.poll() is not None:
            raise RuntimeError(f"videopoet serve exited; log:\n{log.read_text(errors='replace')}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the service was not ready in {STARTUP_SECONDS:g} s; see {log}")
        time.sleep(0.2)


def pick_model(requested: str | None) -> str:
    """--model, else the shipped demo checkpoint when there is one, else tiny."""
    return requested or default_model()


def machine() -> dict[str, Any]:
    """What the figures were measured on: the CPU, cores, torch and the load at the time."""
    return {
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "torch": _version("torch"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)  # without importing it: the client stays small
    except metadata.PackageNotFoundError:
        return None


def add_service_arguments(parser) -> None:
    """The options both service benchmarks take: model, task, worker threads, batch window."""
    parser.add_argument(
        "--model", help="preset or checkpoint (default: demo if shipped, else tiny)"
    )
    parser.add_argument(
        "--task",
        default="text_to_video",
        choices=["text_to_video", "text_to_image", "unconditional"],
    )
    parser.add_argument(
        "--torch-threads", type=int, default=0, help="VIDEOPOET_TORCH_THREADS of the worker"
    )
    parser.add_argument(
        "--batch-window", type=float, help="VIDEOPOET_BATCH_WINDOW_SECONDS (default: the service's)"
    )
