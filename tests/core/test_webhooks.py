"""Webhook events: signed per Standard Webhooks so that the openai SDK's own
`client.webhooks.unwrap` accepts them (and refuses a tampered one); one stable event id per
event, queued once per finished video and endpoint; URLs that reach private addresses are
refused; the secret is never shown."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import openai
import pytest
from pydantic import ValidationError
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from core.config import Settings
from core.store import Store, VideoError, VideoRecord, VideoStatus, new_video_id
from core.webhooks import (
    WEBHOOK_QUEUE,
    WebhookError,
    WebhookQueue,
    WebhookUnresolved,
    event_id,
    make_event,
    new_secret,
    parse_secret,
    resolve,
    retry_intervals,
    signed_headers,
)
from models.spec import Task, TaskSpec

SDK = openai.OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")
ACTIVE = frozenset({VideoStatus.queued, VideoStatus.in_progress})


def _record(**fields: object) -> VideoRecord:
    spec = TaskSpec(task=Task.text_to_image, prompt="a red dot", seed=3)
    values: dict = {
        "id": new_video_id(),
        "model": "tiny",
        "created_at": int(time.time()),
        "seconds": "1",
        "size": "32x32",
        "task": spec.task,
        "spec": spec,
        **fields,
    }
    return VideoRecord(**values)


def _signed(record: VideoRecord, secret: str) -> tuple[bytes, dict[str, str]]:
    event = make_event(record)
    body = json.dumps(event, separators=(",", ":")).encode()  # as the queue sends it
    return body, signed_headers(parse_secret(secret), event["id"], body)


def test_the_sdk_unwraps_a_signed_event_and_refuses_a_tampered_one() -> None:
    secret = new_secret()
    record = _record(status=VideoStatus.completed, completed_at=1_700_000_000, progress=100)
    body, headers = _signed(record, secret)

    event = SDK.webhooks.unwrap(body, headers, secret=secret)
    assert event.type == "video.completed"
    assert event.id == event_id(record.id, "video.completed") == headers["webhook-id"]
    assert event.object == "event" and event.created_at == 1_700_000_000
    video = event.data.model_dump()
    assert (
        video["id"] == record.id and video["status"] == "completed" and video["object"] == "video"
    )
    assert video["seed"] == 3 and video["queue_position"] is None

    tampered = body.replace(b'"progress":100', b'"progress":99')
    assert tampered != body
    with pytest.raises(openai.InvalidWebhookSignatureError):
        SDK.webhooks.unwrap(tampered, headers, secret=secret)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        SDK.webhooks.unwrap(body, headers, secret=new_secret())  # another secret
    stale = {**headers, "webhook-timestamp": str(int(time.time()) - 3600)}
    with pytest.raises(openai.InvalidWebhookSignatureError):
        SDK.webhooks.unwrap(body, stale, secret=secret)


def test_each_finished_status_has_its_event_type() -> None:
    for status, kind in [
        (VideoStatus.completed, "video.completed"),
        (VideoStatus.failed, "video.failed"),
        (VideoStatus.cancelled, "video.cancelled"),
    ]:
        error = VideoError(code="x", message="y") if status is VideoStatus.failed else None
        event = make_event(_record(status=status, error=error))
        assert event["type"] == kind and event["data"]["status"] == status.value
        assert event["id"] == make_event(_record(id=event["data"]["id"], status=status))["id"]
    failed = make_event(_record(status=VideoStatus.failed, error=VideoError(code="x", message="y")))
    assert failed["data"]["error"] == {"code": "x", "message": "y"}


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("abc", "whsec_<base64>"),
        ("whsec_***", "not valid base64"),
        ("whsec_" + "QUJD", "24 to 64 bytes"),
    ],
)
def test_a_malformed_secret_is_refused_without_showing_it(value: str, says: str) -> None:
    with pytest.raises(WebhookError, match=says.replace("<", ".").replace(">", ".")):
        parse_secret(value)
    with pytest.raises(ValidationError) as info:
        Settings(webhook_secret=value)
    assert says in str(info.value) and value not in str(info.value)


def test_settings_need_a_secret_for_server_wide_urls_and_hide_it() -> None:
    with pytest.raises(ValidationError, match="VIDEOPOET_WEBHOOK_SECRET"):
        Settings(webhook_urls="https://example.com/hook")
    with pytest.raises(ValidationError, match="http:// or https://"):
        Settings(webhook_urls="ftp://example.com/hook", webhook_secret=new_secret())
    secret = new_secret()
    settings = Settings(
        webhook_urls=" https://a.example/h , https://b.example/h,", webhook_secret=secret
    )
    assert settings.webhook_urls == "https://a.example/h,https://b.example/h"
    assert secret not in repr(settings) and secret not in str(settings.model_dump())


def _resolver(*addresses: str):
    def getaddrinfo(host: str, port: int, **_: object):
        family = socket.AF_INET6
        return [(family, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    return getaddrinfo


def test_urls_that_reach_private_addresses_are_refused() -> None:
    for address in ("127.0.0.1", "10.1.2.3", "169.254.169.254", "::1", "::ffff:192.168.0.1"):
        with pytest.raises(WebhookError, match="loopback, private, link-local"):
            resolve("https://h.example/x", allow_private=False, getaddrinfo=_resolver(address))
    # one private address among public ones is enough to refuse
    mixed = _resolver("93.184.215.14", "10.0.0.1")
    with pytest.raises(WebhookError, match=r"\(10\.0\.0\.1\)"):
        resolve("https://h.example/x", allow_private=False, getaddrinfo=mixed)
    public = _resolver("93.184.215.14")
    assert resolve("https://h.example/x", allow_private=False, getaddrinfo=public) == [
        "93.184.215.14"
    ]
    assert resolve("http://127.0.0.1:9/x", allow_private=True) == ["127.0.0.1"]
    with pytest.raises(WebhookError, match="http:// or https://"):
        resolve("file:///etc/passwd", allow_private=True)
    with pytest.raises(WebhookUnresolved):
        resolve("https://no-such-host.invalid/x", allow_private=False)
    with pytest.raises(WebhookError) as info:  # a URL's credentials are never shown
        resolve("https://user:hunter2@127.0.0.1/x", allow_private=False)
    assert "hunter2" not in str(info.value)


def test_backoff_doubles_within_the_bounded_time() -> None:
    assert retry_intervals(5, 60) == [5, 10, 20, 25]
    assert retry_intervals(1, 0) == []
    waits = retry_intervals(5, 24 * 3600)
    assert sum(waits) == 24 * 3600 and max(waits) == 3600 and waits[:3] == [5, 10, 20]


@pytest.fixture
def connection(redis: Redis, redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    client.close()


def test_one_delivery_per_endpoint_is_queued_once_per_finished_video(
    redis: Redis, connection: Redis, tmp_path
) -> None:
    store = Store(redis, tmp_path)
    webhooks = WebhookQueue(
        connection, urls=["https://a.example/h"], backoff_seconds=2, retry_seconds=10
    )
    store.on_finish = webhooks.video_finished
    record = _record(webhook_url="https://user:pw@b.example/h?token=abc")
    store.create(record)

    assert store.finish(record.id, VideoStatus.cancelled, only_if=ACTIVE) == 1
    assert store.finish(record.id, VideoStatus.failed, only_if=ACTIVE) == 0  # lost: no event
    queue = Queue(WEBHOOK_QUEUE, connection=connection, serializer=JSONSerializer)
    jobs = [Job.fetch(i, connection=connection, serializer=JSONSerializer) for i in queue.job_ids]
    assert len(jobs) == 2
    expected_id = event_id(record.id, "video.cancelled")
    assert {job.args[1] for job in jobs} == {"https://a.example/h", record.webhook_url}
    for job in jobs:
        assert job.func_name == "workers.notifier.deliver" and job.args[0] == expected_id
        assert json.loads(job.args[2])["type"] == "video.cancelled"
        assert job.retries_left == 3 and job.retry_intervals == [2, 4, 4]
        assert "token=abc" not in job.description and "pw@" not in job.description
    # the video object in the event leaves the webhook URL out
    assert "b.example" not in jobs[0].args[2]
