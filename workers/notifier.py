"""The notifier: a light RQ worker on the `videopoet-webhooks` queue that signs and sends
webhook events (core/webhooks.py queues them). It never loads a model: `videopoet notifier`
runs one (`videopoet serve` starts one when VIDEOPOET_WEBHOOK_SECRET is set), on any machine
that reaches Redis.

Each attempt resolves the URL again, refuses a loopback, private, link-local or reserved
address (unless VIDEOPOET_WEBHOOK_ALLOW_PRIVATE), connects to the address it checked, follows
no redirect, and gets VIDEOPOET_WEBHOOK_TIMEOUT_SECONDS; a non-2xx answer or no answer fails
the attempt, and rq tries again after the job's backoff (its scheduler, in this process)
until VIDEOPOET_WEBHOOK_RETRY_SECONDS are used up. Outcomes: `videopoet_webhook_deliveries`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx
from prometheus_client import start_http_server
from redis import Redis
from rq import get_current_job
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker

from core.config import Settings, get_settings
from core.redact import redact_url
from core.webhooks import (
    WEBHOOK_QUEUE,
    WebhookError,
    WebhookUnresolved,
    parse_secret,
    resolve,
    signed_headers,
)
from workers import metrics

logger = logging.getLogger(__name__)

USER_AGENT = "videopoet-webhooks/1"


class DeliveryFailed(Exception):
    """An attempt that did not get a 2xx; rq retries the job while its retries last."""


def deliver(event_id: str, url: str, body: str) -> dict[str, Any]:
    """The delivery job: one signed POST of `body` to `url`."""
    settings = get_settings()
    if settings.webhook_secret is None:
        raise DeliveryFailed("VIDEOPOET_WEBHOOK_SECRET is not set on this notifier")
    key = parse_secret(settings.webhook_secret.get_secret_value())
    shown = redact_url(url)
    try:
        addresses = resolve(url, allow_private=settings.webhook_allow_private)
    except WebhookUnresolved as exc:  # DNS may answer later: tried again
        problem = str(exc)
    except WebhookError as exc:  # an address that is not allowed: never tried again
        metrics.WEBHOOK_DELIVERIES.labels("refused").inc()
        logger.warning("webhook %s not sent: %s", event_id, exc)
        return {"status": "refused", "reason": str(exc)}
    else:
        payload = body.encode()
        headers = signed_headers(key, event_id, payload)
        try:
            status = post(url, addresses[0], payload, headers, settings.webhook_timeout_seconds)
        except httpx.HTTPError as exc:
            problem = f"no answer ({type(exc).__name__})"
        else:
            if 200 <= status < 300:
                metrics.WEBHOOK_DELIVERIES.labels("delivered").inc()
                logger.info("webhook %s delivered to %s (%d)", event_id, shown, status)
                return {"status": status}
            problem = f"answered {status}"
            if 300 <= status < 400:
                problem += " (redirects are not followed)"
    job = get_current_job()
    last = job is None or not job.retries_left
    metrics.WEBHOOK_DELIVERIES.labels("gave_up" if last else "retried").inc()
    message = f"webhook {event_id} to {shown}: {problem}"
    if last:
        logger.error("%s; giving up", message)
    else:
        logger.warning("%s; %d more tries", message, job.retries_left if job else 0)
    raise DeliveryFailed(message)


def post(url: str, address: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """POST to `url` at `address` (the one checked: a DNS answer that changes since cannot
    move the request elsewhere), TLS checked against the URL's host; no redirects, no proxy
    from the environment, the answer's body unread. Returns the status code."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    netloc = f"[{ip}]" if ip.version == 6 else str(ip)
    if parts.port:
        netloc += f":{parts.port}"
    if "@" in parts.netloc:
        netloc = parts.netloc.rsplit("@", 1)[0] + "@" + netloc
    target = parts._replace(netloc=netloc).geturl()
    request_headers = {
        **headers,
        "Host": parts.netloc.rsplit("@", 1)[-1],
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        request = client.build_request(
            "POST", target, content=body, headers=request_headers, extensions=extensions
        )
        response = client.send(request, stream=True)
        response.close()
        return response.status_code


class NotifierWorker(SimpleWorker):
    """RQ's in-process worker, logging a failed delivery in one line (no traceback)."""

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        if exc_info and isinstance(exc_info[1], DeliveryFailed):
            return  # deliver() logged it
        super().handle_exception(job, *exc_info)


def run_notifier(
    settings: Settings | None = None,
    *,
    name: str | None = None,
    metrics_port: int = 0,
    burst: bool = False,
) -> None:
    """Send webhook events until SIGTERM/SIGINT (or, with `burst`, until the queue is empty)."""
    settings = settings or get_settings()
    if settings.webhook_secret is None:
        raise WebhookError("the notifier needs VIDEOPOET_WEBHOOK_SECRET (whsec_<base64>)")
    name = name or f"{socket.gethostname()}.notifier.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    if metrics_port:
        try:
            start_http_server(metrics_port, addr=settings.worker_metrics_host)
        except OSError as exc:
            logger.warning("notifier metrics not served: port %d: %s", metrics_port, exc)
    # httpx logs each request's full URL (a query may hold a receiver's token): this module
    # logs deliveries itself, the URL redacted
    logging.getLogger("httpx").setLevel(logging.WARNING)
    connection = Redis.from_url(settings.redis)
    worker = NotifierWorker(
        [WEBHOOK_QUEUE],
        connection=connection,
        name=name,
        serializer=JSONSerializer,
        maintenance_interval=settings.maintenance_interval_seconds,
        worker_ttl=settings.maintenance_interval_seconds + 15,
    )
    logger.info("notifier %s sending webhooks from queue %s", name, WEBHOOK_QUEUE)
    try:
        worker.work(burst=burst, with_scheduler=True, logging_level=settings.log_level.upper())
    finally:
        logger.info("notifier %s stopped", name)
