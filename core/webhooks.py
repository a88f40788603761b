"""Webhooks: `video.completed`, `video.failed` and `video.cancelled` events, signed per the
Standard Webhooks spec (https://www.standardwebhooks.com/), so that the openai SDK's
`client.webhooks.unwrap(body, headers, secret=...)` accepts them.

The store calls `WebhookQueue.video_finished` once per video, when its move to a finished
status wins (core/store.py `Store.finish`: a worker completing or failing it, the API
cancelling it, a worker giving up on a lost job). That builds the event (a stable id per
event, the video object as the API returns it) and queues one delivery job per endpoint on
the `videopoet-webhooks` RQ queue, by dotted name: the notifier process (workers/notifier.py,
`videopoet notifier`) signs and sends it, retrying with exponential backoff; nothing on the
GPU path waits for a receiver.

A URL must be http(s) and resolve to public addresses only (no loopback, private,
link-local, reserved or multicast address), unless VIDEOPOET_WEBHOOK_ALLOW_PRIVATE: checked
when a create names it and again at each delivery (which connects to the address it checked).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import SplitResult, urlsplit

from redis import Redis
from rq import Queue, Retry
from rq.serializers import JSONSerializer

from core.redact import redact_url
from core.store import VideoRecord, VideoStatus
from core.video import Video

logger = logging.getLogger(__name__)

WEBHOOK_QUEUE = "videopoet-webhooks"
# The delivery job, run by the notifier (workers/notifier.py); the API only names it.
DELIVER = "workers.notifier.deliver"
EVENT_TYPES = {
    VideoStatus.completed: "video.completed",
    VideoStatus.failed: "video.failed",
    VideoStatus.cancelled: "video.cancelled",
}
SECRET_PREFIX = "whsec_"
# Standard Webhooks: secrets of 24 to 64 random bytes.
SECRET_BYTES = (24, 64)
MAX_URL_CHARS = 2048
# No wait between two attempts is longer than this.
MAX_BACKOFF_SECONDS = 3600
# How long rq keeps a delivery job after its last attempt (to look at with rq tooling).
KEEP_DELIVERED_SECONDS = 3600
KEEP_FAILED_SECONDS = 7 * 24 * 3600

Resolver = Callable[..., Sequence[tuple[Any, ...]]]


class WebhookError(ValueError):
    """A webhook setting or URL that cannot be used; the message says why (never a secret)."""


class WebhookUnresolved(WebhookError):
    """The URL's host does not resolve (now: at delivery, a later attempt may do better)."""


# --- the secret and the signature ------------------------------------------------------
def parse_secret(value: str) -> bytes:
    """The key bytes of a "whsec_<base64>" secret."""
    value = value.strip()
    if not value.startswith(SECRET_PREFIX):
        raise WebhookError(
            f"VIDEOPOET_WEBHOOK_SECRET must look like {SECRET_PREFIX}<base64> (`videopoet "
            "webhook-secret` makes one)"
        )
    try:
        key = base64.b64decode(value[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise WebhookError(
            f"VIDEOPOET_WEBHOOK_SECRET: what follows {SECRET_PREFIX} is not valid base64"
        ) from None
    low, high = SECRET_BYTES
    if not low <= len(key) <= high:
        raise WebhookError(
            f"VIDEOPOET_WEBHOOK_SECRET must hold {low} to {high} bytes (base64 after "
            f"{SECRET_PREFIX}); it holds {len(key)}"
        )
    return key


def new_secret() -> str:
    """A fresh secret in the whsec_ form (32 random bytes)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 of HMAC-SHA256 over "{id}.{timestamp}.{body}">`."""
    signed = message_id.encode() + b"." + str(timestamp).encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(
    key: bytes, message_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt (timestamp: now)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, message_id, timestamp, body),
    }


# --- URLs --------------------------------------------------------------------------------
def check_url_form(url: str) -> SplitResult:
    """An absolute http(s) URL with a host; WebhookError (the URL redacted) otherwise."""
    shown = redact_url(url)
    if len(url) > MAX_URL_CHARS or any(c.isspace() for c in url):
        raise WebhookError(
            f"webhook URL {shown[:80]!r} is too long or holds white space (at most "
            f"{MAX_URL_CHARS} characters)"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (a malformed port raises here)
    except ValueError:
        raise WebhookError(f"webhook URL {shown!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError(f"webhook URL {shown!r} must be an http:// or https:// URL with a host")
    return parts


def parse_urls(value: str | None) -> list[str]:
    """VIDEOPOET_WEBHOOK_URLS: comma-separated http(s) URLs (checked for form; resolved at
    delivery)."""
    urls = [u.strip() for u in (value or "").split(",") if u.strip()]
    for url in urls:
        check_url_form(url)
    return list(dict.fromkeys(urls))


def is_public(address: str) -> bool:
    """A globally routable unicast address (an IPv4-mapped IPv6 one judged as IPv4)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (
        ip.is_multicast
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_unspecified
    )


def resolve(
    url: str, *, allow_private: bool, getaddrinfo: Resolver = socket.getaddrinfo
) -> list[str]:
    """The addresses `url`'s host resolves to, every one of them public unless
    `allow_private`; WebhookError otherwise (a URL that does not resolve, too)."""
    parts = check_url_form(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise WebhookUnresolved(
            f"webhook URL {redact_url(url)!r}: its host does not resolve ({exc})"
        ) from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise WebhookUnresolved(f"webhook URL {redact_url(url)!r}: its host does not resolve")
    if not allow_private:
        private = [a for a in addresses if not is_public(a)]
        if private:
            raise WebhookError(
                f"webhook URL {redact_url(url)!r} resolves to a loopback, private, link-local "
                f"or reserved address ({private[0]}); webhooks go to public addresses only "
                "(VIDEOPOET_WEBHOOK_ALLOW_PRIVATE=1 allows others)"
            )
    return addresses


# --- events ------------------------------------------------------------------------------
def event_id(video_id: str, event_type: str) -> str:
    """One id per event, the same however often it is built (receivers deduplicate on it)."""
    return "evt_" + hashlib.sha256(f"{video_id}:{event_type}".encode()).hexdigest()[:32]


def make_event(record: VideoRecord) -> dict[str, Any]:
    """The event of a finished video: OpenAI's event envelope around the video object."""
    event_type = EVENT_TYPES[record.status]
    return {
        "id": event_id(record.id, event_type),
        "object": "event",
        "type": event_type,
        "created_at": record.completed_at or int(time.time()),
        "data": Video.from_record(record).model_dump(mode="json"),
    }


def retry_intervals(backoff_seconds: int, total_seconds: int) -> list[int]:
    """Waits between attempts: backoff, twice that, ... (each at most MAX_BACKOFF_SECONDS),
    as many as fit in `total_seconds` (the last one cut to fit)."""
    intervals: list[int] = []
    wait, spent = max(1, backoff_seconds), 0
    while spent < total_seconds:
        step = min(wait, MAX_BACKOFF_SECONDS, total_seconds - spent)
        intervals.append(step)
        spent += step
        wait *= 2
    return intervals


class WebhookQueue:
    """Queues the deliveries of finished videos' events (the store's `on_finish`)."""

    def __init__(
        self,
        connection: Redis,
        *,
        urls: Sequence[str] = (),
        timeout_seconds: float = 10.0,
        backoff_seconds: int = 5,
        retry_seconds: int = 24 * 3600,
    ):
        # RQ wants a client that returns bytes (decode_responses=False).
        self.queue = Queue(WEBHOOK_QUEUE, connection=connection, serializer=JSONSerializer)
        self.urls = list(urls)
        self.timeout_seconds = timeout_seconds
        self.intervals = retry_intervals(backoff_seconds, retry_seconds)

    @classmethod
    def from_settings(cls, connection: Redis, settings: Any) -> WebhookQueue:
        return cls(
            connection,
            urls=parse_urls(settings.webhook_urls),
            timeout_seconds=settings.webhook_timeout_seconds,
            backoff_seconds=settings.webhook_backoff_seconds,
            retry_seconds=settings.webhook_retry_seconds,
        )

    def endpoints(self, record: VideoRecord) -> list[str]:
        """The server's endpoints, then the video's own `webhook_url`."""
        own = [record.webhook_url] if record.webhook_url else []
        return list(dict.fromkeys([*self.urls, *own]))

    def video_finished(self, record: VideoRecord) -> list[str]:
        """Queue one delivery per endpoint of the event of `record` (finished just now);
        returns the delivery job ids."""
        endpoints = self.endpoints(record)
        if record.status not in EVENT_TYPES or not endpoints:
            return []
        event = make_event(record)
        body = json.dumps(event, separators=(",", ":"))
        retry = Retry(max=len(self.intervals), interval=self.intervals) if self.intervals else None
        jobs = []
        for url in endpoints:
            job_id = f"{event['id']}-{hashlib.sha256(url.encode()).hexdigest()[:16]}"
            self.queue.enqueue_call(
                func=DELIVER,
                args=(event["id"], url, body),
                job_id=job_id,
                # the attempt's own timeouts bound it; this is rq's backstop
                timeout=int(self.timeout_seconds * 2) + 5,
                retry=retry,
                result_ttl=KEEP_DELIVERED_SECONDS,
                failure_ttl=KEEP_FAILED_SECONDS,
                # rq shows and logs the description: no body, and the URL redacted
                description=f"webhook {event['id']} ({event['type']}) to {redact_url(url)}",
            )
            jobs.append(job_id)
        logger.info(
            "video %s: %s queued for %d endpoint(s)", record.id, event["type"], len(endpoints)
        )
        return jobs
