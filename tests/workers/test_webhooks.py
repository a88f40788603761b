"""Webhooks end to end: a real receiver (an HTTP server thread here), the real notifier
process (`videopoet notifier`), the session worker and an API with webhooks on. Events
arrive once each, signed so that the openai SDK's `client.webhooks.unwrap` accepts them; a
dead receiver is retried with backoff and never holds up a job; a redirect is not followed;
the outcomes show in the metrics."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer

from core.store import VideoStatus
from core.webhooks import event_id, new_secret
from tests.conftest import REPO, ApiServer, Service, free_port, start_api, wait_for

SECRET = new_secret()
DONE = {VideoStatus.completed, VideoStatus.failed, VideoStatus.cancelled}
SDK = openai.OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")
# A receiver's credential in a webhook URL's query: redacted wherever the URL is logged.
URL_TOKEN = "receiver-token-31"
# conftest's service_env: a first retry after 1 s, then 2 s, then no more.
ATTEMPTS = 3


class Receiver:
    """Records every POST (path, lower-cased headers, body); answers 204, or 302 on
    /redirect."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.received.append((self.path, headers, body))
                if self.path.startswith("/redirect"):
                    self.send_response(302)
                    self.send_header("Location", "/landing")
                else:
                    self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def at(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for p, h, b in list(self.received) if p == path]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def webhook_env(service_env: dict[str, str]) -> dict[str, str]:
    return {
        **service_env,
        "VIDEOPOET_WEBHOOK_SECRET": SECRET,
        # the receivers listen on 127.0.0.1
        "VIDEOPOET_WEBHOOK_ALLOW_PRIVATE": "1",
    }


@pytest.fixture(scope="module")
def hooks_api(webhook_env: dict[str, str], logs: Path, receiver: Receiver) -> Iterator[ApiServer]:
    """An API with webhooks on, and a server-wide endpoint (/server) on the receiver."""
    server = start_api(webhook_env, logs, VIDEOPOET_WEBHOOK_URLS=receiver.url + "/server")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def notifier(webhook_env: dict[str, str], logs: Path) -> Iterator[subprocess.Popen]:
    log = logs / "notifier.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "notifier", "--name", "test-notifier"],
        env=webhook_env,
        cwd=REPO,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    text = log.read_text(errors="replace")
    assert SECRET not in text and URL_TOKEN not in text  # never logged


def _create(service: Service, api: ApiServer, prompt: str, hook: str, **fields: object) -> str:
    body = {"prompt": prompt, "task": "text_to_image", "webhook_url": hook, **fields}
    response = service.http.post(api.url + "/v1/videos", json=body)
    assert response.status_code == 200, response.text
    assert "webhook_url" not in response.json()  # kept, never shown
    return response.json()["id"]


def _delivery_job(redis_url: str, video_id: str, kind: str, url: str) -> Job:
    job_id = f"{event_id(video_id, kind)}-{hashlib.sha256(url.encode()).hexdigest()[:16]}"
    return Job.fetch(job_id, connection=Redis.from_url(redis_url), serializer=JSONSerializer)


def test_completed_failed_and_cancelled_events_arrive_once_each(
    service: Service, hooks_api: ApiServer, receiver: Receiver, notifier: subprocess.Popen
) -> None:
    hook = receiver.url + "/mine"
    completed = _create(service, hooks_api, "a red dot", hook, seed=4)
    failed = _create(service, hooks_api, "[raise] breaks", hook)
    cancelled = _create(service, hooks_api, "[slow] long", hook, task="text_to_video")
    response = service.http.post(f"{hooks_api.url}/v1/videos/{cancelled}/cancel")
    assert response.json()["status"] == "cancelled"
    for video_id in (completed, failed):
        service.wait_status(video_id, DONE)

    wait_for(lambda: len(receiver.at("/mine")) >= 3, 30, "three events")
    time.sleep(1.5)  # room for a duplicate to show up
    events = {}
    for headers, body in receiver.at("/mine"):
        event = SDK.webhooks.unwrap(body, headers, secret=SECRET)  # the SDK checks the signature
        assert event.id == headers["webhook-id"] and event.id not in events  # once each
        assert headers["content-type"] == "application/json"
        events[event.id] = event
    by_video = {e.data.id: e for e in events.values()}
    assert set(by_video) == {completed, failed, cancelled}
    assert by_video[completed].type == "video.completed"
    assert by_video[completed].data.status == "completed" and by_video[completed].data.seed == 4
    assert by_video[failed].type == "video.failed"
    assert by_video[failed].data.error["code"] == "generation_error"
    assert by_video[cancelled].type == "video.cancelled"
    for video_id, event in by_video.items():
        assert event.id == event_id(video_id, event.type)
        assert event.data.model_dump() == {
            **service.http.get(f"{hooks_api.url}/v1/videos/{video_id}").json(),
            "queue_position": None,
        }

    headers, body = receiver.at("/mine")[0]
    with pytest.raises(openai.InvalidWebhookSignatureError):
        SDK.webhooks.unwrap(
            body.replace(b'"object":"event"', b'"object":"evil"'), headers, secret=SECRET
        )

    # the API that cancelled sends to its server-wide endpoint as well
    wait_for(lambda: receiver.at("/server"), 30, "the server-wide endpoint's event")
    headers, body = receiver.at("/server")[0]
    event = SDK.webhooks.unwrap(body, headers, secret=SECRET)
    assert event.type == "video.cancelled" and event.id == by_video[cancelled].id


def test_a_dead_receiver_is_retried_with_backoff_and_never_delays_the_job(
    service: Service, hooks_api: ApiServer, notifier: subprocess.Popen, redis_url: str
) -> None:
    dead_port = free_port()  # nothing listens here yet
    late = f"http://127.0.0.1:{dead_port}/late?token={URL_TOKEN}"
    redirecting = Receiver()
    moved = redirecting.url + "/redirect"
    try:
        started = time.monotonic()
        waited = _create(service, hooks_api, "a dot for a dead receiver", late, seed=1)
        refused = _create(service, hooks_api, "a dot for a redirect", moved, seed=2)
        for video_id in (waited, refused):
            assert service.wait_status(video_id, DONE).status is VideoStatus.completed
        took = time.monotonic() - started

        # the first attempt failed and a retry is scheduled: the job was done all the same
        job = _delivery_job(redis_url, waited, "video.completed", late)
        wait_for(lambda: job.get_status(refresh=True) == "scheduled", 20, "a scheduled retry")
        assert took < 60
        late_receiver = Receiver(port=dead_port)  # the receiver comes back
        try:
            path = f"/late?token={URL_TOKEN}"
            wait_for(lambda: late_receiver.at(path), 20, "the retried delivery")
            headers, body = late_receiver.at(path)[0]
            event = SDK.webhooks.unwrap(body, headers, secret=SECRET)
            assert event.id == event_id(waited, "video.completed")
        finally:
            late_receiver.stop()

        # a redirect is a failed attempt, never followed: tried ATTEMPTS times, then given up
        job = _delivery_job(redis_url, refused, "video.completed", moved)
        wait_for(lambda: job.get_status(refresh=True) == "failed", 30, "the delivery to give up")
        assert len(redirecting.at("/redirect")) == ATTEMPTS
        assert redirecting.at("/landing") == []
        ids = {h["webhook-id"] for h, _ in redirecting.at("/redirect")}
        assert ids == {event_id(refused, "video.completed")}  # one event id on every attempt
    finally:
        redirecting.stop()

    text = service.http.get(hooks_api.url + "/metrics").text
    outcomes = {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "videopoet_webhook_deliveries"
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    assert outcomes.get("delivered", 0) >= 1
    assert outcomes.get("retried", 0) >= ATTEMPTS  # the dead one at least once, the moved twice
    assert outcomes.get("gave_up", 0) >= 1


def test_a_delivery_connects_to_the_address_it_checked() -> None:
    """The request goes to the address resolved and checked, whatever a later DNS answer
    would say: here a name that resolves nowhere, sent to the receiver's address."""
    from workers.notifier import post

    receiver = Receiver()
    try:
        url = f"http://hooks.example.invalid:{receiver.port}/pinned?token=t"
        status = post(url, "127.0.0.1", b"{}", {"webhook-id": "evt_x"}, timeout=5)
        assert status == 204
        [(headers, body)] = receiver.at("/pinned?token=t")
        assert headers["host"] == f"hooks.example.invalid:{receiver.port}"
        assert headers["webhook-id"] == "evt_x" and body == b"{}"
    finally:
        receiver.stop()
