"""`videopoet`: user mistakes, local generation, and `serve` starting and stopping everything."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from core.webhooks import new_secret
from tests.conftest import REPO, free_port, wait_for
from models import media


def _cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("VIDEOPOET_")}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env={**base, "VIDEOPOET_MODEL": "tiny", "PYTHONPATH": str(REPO), **(env or {})},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["generate", "--task", "dance", "-o", "x.mp4"], "unknown task 'dance'"),
        (["generate", "--task", "text_to_video", "-o", "x.mp4"], "needs prompt"),
        (
            ["generate", "--task", "text_to_image", "--prompt", "x", "-o", "x.mp4"],
            "give -o NAME.png",
        ),
        (
            [
                "generate",
                "--task",
                "stylize",
                "--prompt",
                "x",
                "--video",
                "nope.mp4",
                "-o",
                "x.mp4",
            ],
            "no such file",
        ),
        (
            ["generate", "--prompt", "x", "--seconds", "500", "-o", "x.mp4"],
            "less than or equal to 60",
        ),
        (
            ["generate", "--task", "inpaint", "--mask-box", "1,2", "-o", "x.mp4"],
            "--mask-box must be",
        ),
        (["info", "--model", "nope"], "unknown model 'nope'"),
        (["serve", "--workers", "many"], "invalid int value"),
    ],
)
def test_user_mistakes_print_one_line_and_exit_2(args: list[str], says: str) -> None:
    result = _cli(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_generate_writes_an_mp4_and_info_describes_the_model(tmp_path: Path) -> None:
    out = tmp_path / "ball.mp4"
    result = _cli(
        "generate", "--prompt", "a red ball", "--seconds", "1", "--seed", "3", "-o", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and "seed 3" in result.stdout
    frames, fps = media.decode_video(out)
    assert frames.shape == (8, 32, 32, 3) and fps == 8.0

    info = _cli("info")
    assert info.returncode == 0, info.stderr
    described = json.loads(info.stdout)
    assert described["model"] == "tiny" and described["card"]["width"] == 32


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _command(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    except OSError:
        return []


def _running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_serve_runs_redis_api_and_a_worker_and_sigterm_stops_them_all(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDEOPOET_", "PROMETHEUS_"))}
    env.update(
        VIDEOPOET_MODEL="tiny",
        VIDEOPOET_DATA_DIR=str(tmp_path / "data"),
        VIDEOPOET_WORKER_METRICS_PORT=str(free_port()),
        VIDEOPOET_SHUTDOWN_GRACE_SECONDS="30",
        # webhooks on: serve starts the notifier too
        VIDEOPOET_WEBHOOK_SECRET=new_secret(),
        PYTHONPATH=str(REPO),
    )
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve", "--workers", "1", "--port", str(port)],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    children: set[int] = set()
    try:

        def ready() -> bool:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                return httpx.get(url + "/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 120, "serve to be ready", interval=0.3)
        video = httpx.post(url + "/v1/videos", json={"prompt": "x", "task": "text_to_image"}).json()

        def finished() -> str | None:
            status = httpx.get(f"{url}/v1/videos/{video['id']}").json()["status"]
            return status if status not in ("queued", "in_progress") else None

        assert wait_for(finished, 120, "the video", interval=0.2) == "completed"
        metrics = httpx.get(url + "/metrics").text
        assert "videopoet_generated_tokens_total" in metrics  # the worker's, via the shared folder
        children |= _descendants(serve.pid)
        assert len(children) >= 4  # redis-server, api, worker, notifier
        commands = [_command(pid) for pid in children]
        assert any("notifier" in command for command in commands), commands

        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=90) == 0
        assert [pid for pid in children if _running(pid)] == [], "processes left behind"
        redis_dir = tmp_path / "data" / "redis"
        assert any(p.name.startswith("appendonly") for p in redis_dir.iterdir())  # AOF on
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
        for pid in children:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


def test_the_api_process_never_imports_torch() -> None:
    code = (
        "import sys; from app.main import create_app; import cli.main; create_app(); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    env = {**os.environ, "VIDEOPOET_MODEL": "tiny", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
