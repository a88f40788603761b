"""Limits and backpressure, kept in Redis so they hold across API processes:

- a request rate per caller (GCRA: `limit` requests per minute, up to `limit` at once after a
  quiet minute) -> 429 with Retry-After;
- videos queued or in progress at once per caller -> 429 with Retry-After;
- a queue-length cap -> 503 with Retry-After (in app/routes/videos.py);
- a request-body cap, checked while the body streams in -> 413 (`BodyLimit`).
"""

from __future__ import annotations

import json
import time
from typing import Any

from redis import Redis
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLarge, RateLimited, ServiceUnavailable, error_body
from core.store import KEY_PREFIX, RECORD_KEY, VideoStatus

RATE_KEY = KEY_PREFIX + ":rate:{}:{}"  # string: a caller's theoretical arrival time (GCRA)
ACTIVE_KEY = KEY_PREFIX + ":active:{}"  # zset: a caller's video ids -> reserved at (unix s)
RATE_PERIOD_SECONDS = 60.0
# A reserved slot whose record was never written (the API died mid-create) frees after this.
PENDING_SLOT_SECONDS = 600
# Retry-After when the caller has too many videos at once (one of them must finish first).
ACTIVE_RETRY_SECONDS = 10
# Retry-After when the queue is full.
QUEUE_FULL_RETRY_SECONDS = 30

# GCRA on the server's clock. ARGV: seconds per request, burst period (seconds).
# Returns "0" when allowed, else the seconds to wait (as a string: Lua numbers are truncated).
_RATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat + interval - period - now
if wait > 0 then return tostring(wait) end
redis.call('SET', KEYS[1], string.format('%.6f', tat + interval), 'EX', math.ceil(period) + 1)
return '0'
"""

# Reserve a slot for video ARGV[2] when the caller has fewer than ARGV[1] active videos.
# Members whose record is finished (or gone, once past the pending time) are dropped first.
# ARGV: cap, video id, record key prefix, now, pending seconds, active statuses (JSON list).
# Returns -1 when reserved, else the number of active videos.
_RESERVE = """
local cap = tonumber(ARGV[1])
local now = tonumber(ARGV[4])
local pending = tonumber(ARGV[5])
local active_statuses = cjson.decode(ARGV[6])
local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local active = 0
for i = 1, #members, 2 do
  local id, since = members[i], tonumber(members[i + 1])
  local status = redis.call('HGET', ARGV[3] .. id, 'status')
  local live = false
  if status then
    for _, s in ipairs(active_statuses) do
      if s == status then live = true end
    end
  elseif now - since < pending then
    live = true
  end
  if live then active = active + 1 else redis.call('ZREM', KEYS[1], id) end
end
if active >= cap then return active end
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('EXPIRE', KEYS[1], 7 * 24 * 3600)
return -1
"""
_ACTIVE = [json.dumps(s.value) for s in (VideoStatus.queued, VideoStatus.in_progress)]


class Limits:
    """Per-caller rate and concurrency limits on one Redis (a decode_responses client)."""

    def __init__(self, redis: Redis):
        self.redis = redis
        self._rate = redis.register_script(_RATE)
        self._reserve = redis.register_script(_RESERVE)

    def check_rate(self, bucket: str, identity: str, per_minute: int) -> None:
        """Count one request of `identity` in `bucket`; 429 past `per_minute`."""
        if per_minute <= 0:
            return
        wait = float(
            self._rate(
                keys=[RATE_KEY.format(bucket, identity)],
                args=[RATE_PERIOD_SECONDS / per_minute, RATE_PERIOD_SECONDS],
            )
        )
        if wait > 0:
            raise RateLimited(
                f"rate limit reached: at most {per_minute} {bucket} per minute for this API key "
                f"(VIDEOPOET_{'CREATE_' if bucket == 'creates' else ''}RATE_LIMIT_PER_MINUTE); "
                f"retry in {wait:.1f} s",
                retry_after=wait,
            )

    def reserve_slot(self, identity: str, video_id: str, cap: int) -> None:
        """Count `video_id` among the caller's active videos; 429 when `cap` are active."""
        if cap <= 0:
            return
        active = int(
            self._reserve(
                keys=[ACTIVE_KEY.format(identity)],
                args=[
                    cap,
                    video_id,
                    RECORD_KEY.format(""),
                    time.time(),
                    PENDING_SLOT_SECONDS,
                    json.dumps(_ACTIVE),
                ],
            )
        )
        if active >= 0:
            raise RateLimited(
                f"this API key has {active} videos queued or in progress; at most {cap} at once "
                "(VIDEOPOET_MAX_ACTIVE_JOBS_PER_KEY): wait for one to finish, or cancel one",
                retry_after=ACTIVE_RETRY_SECONDS,
                code="too_many_active_videos",
            )

    def release_slot(self, identity: str, video_id: str) -> None:
        """Give back a slot reserved for a video that was not created after all."""
        self.redis.zrem(ACTIVE_KEY.format(identity), video_id)


def check_queue_length(depth: int, cap: int) -> None:
    """503 with Retry-After when `cap` jobs already wait."""
    if cap > 0 and depth >= cap:
        raise ServiceUnavailable(
            f"the queue is full ({depth} videos waiting; VIDEOPOET_MAX_QUEUE_LENGTH is {cap}); "
            f"retry in {QUEUE_FULL_RETRY_SECONDS} s",
            code="queue_full",
            headers={"Retry-After": str(QUEUE_FULL_RETRY_SECONDS)},
        )


class BodyLimit:
    """ASGI middleware: 413 for a request body over `max_bytes`, whether its Content-Length
    says so up front (refused unread) or it streams past the limit (chunked)."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _message(self) -> str:
        return (
            f"the request body is larger than {self.max_bytes} bytes "
            "(uploads may be at most VIDEOPOET_MAX_UPLOAD_BYTES)"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the handler's read: the API's error handlers answer 413.
                    raise PayloadTooLarge(self._message(), code="request_too_large")
            return message

        await self.app(scope, limited_receive, send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            error_body(self._message(), "invalid_request_error", None, "request_too_large")
        ).encode()
        headers: list[Any] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
