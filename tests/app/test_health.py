"""Liveness, readiness (with the reason when not ready) and the docs page."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import Service, start_api


def test_ready_when_a_worker_serves_the_model(service: Service) -> None:
    service.workers.wait_ready(service.workers.alive()[0], timeout=15)
    assert service.http.get("/healthz").json() == {
        "status": "alive",
        "model": None,
        "workers": None,
        "queue_depth": None,
        "reason": None,
    }
    ready = service.http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert ready.json()["workers"] >= 1
    assert service.http.get("/docs").status_code == 200


def test_not_ready_without_a_worker_for_the_model(service: Service, logs: Path) -> None:
    other = start_api(service.workers.env, logs, VIDEOPOET_MODEL="demo")  # no demo worker
    try:
        response = httpx.get(other.url + "/readyz", timeout=10)
    finally:
        other.stop()
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert "no live worker serves model 'demo'" in response.json()["reason"]


def test_not_ready_when_redis_is_unreachable(service: Service, logs: Path) -> None:
    gone = start_api(service.workers.env, logs, VIDEOPOET_REDIS_URL="redis://127.0.0.1:1/0")
    try:
        ready = httpx.get(gone.url + "/readyz", timeout=10)
        create = httpx.post(gone.url + "/v1/videos", json={"prompt": "x"}, timeout=10)
    finally:
        gone.stop()
    assert ready.status_code == 503 and "unreachable" in ready.json()["reason"]
    assert create.status_code == 503 and "Redis is unreachable" in create.json()["error"]["message"]


def test_a_redis_password_is_never_shown(service: Service, logs: Path) -> None:
    # /readyz needs no API key: a password in the configured URL must not reach it, nor the log.
    secret = "hunter2-in-the-url"
    gone = start_api(
        service.workers.env, logs, VIDEOPOET_REDIS_URL=f"redis://ops:{secret}@127.0.0.1:1/0"
    )
    try:
        ready = httpx.get(gone.url + "/readyz", timeout=10)
    finally:
        gone.stop()
    reason = ready.json()["reason"]
    assert ready.status_code == 503
    assert "redis://ops:***@127.0.0.1:1/0" in reason and secret not in reason
    log = gone.log.read_text()
    assert "redis://ops:***@127.0.0.1:1/0" in log  # the start line still names the server
    assert secret not in log
