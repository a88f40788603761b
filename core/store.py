"""Video records in Redis, their files in the artifact store (core/artifacts.py).

A record is a Redis hash (one JSON-encoded value per field, so the API and a worker can
update different fields without clobbering each other), listed by a sorted set scored by
creation time (and, for a keyed caller, by a sorted set of its own). Status changes go
through one Lua script that checks the current status, so a cancel and a completion cannot
both win. Files live in the artifact store under the video's id (a folder
``<artifact_dir>/<video id>/``, or objects under ``s3://BUCKET/PREFIX/<video id>/``).

An Idempotency-Key is claimed before the video is made: the claim holds the video id and a
fingerprint of the request, so a retry with the same body gets the same video and one with
another body a 409.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, Field
from pydantic_core import to_jsonable_python
from redis import Redis

from core.artifacts import ArtifactError, Artifacts, FolderArtifacts
from models.spec import Task, TaskSpec

logger = logging.getLogger(__name__)

KEY_PREFIX = "videopoet"
RECORD_KEY = KEY_PREFIX + ":video:{}"  # hash: one video record
INDEX_KEY = KEY_PREFIX + ":videos"  # zset: video id -> created_at in microseconds
OWNER_INDEX_KEY = KEY_PREFIX + ":owner:{}:videos"  # zset: one API key's videos, as INDEX_KEY
EXPIRY_KEY = KEY_PREFIX + ":expiry"  # zset: video id -> expires_at (unix seconds)
# string: JSON {"video_id", "fingerprint", "done"} under (owner, Idempotency-Key)
IDEMPOTENCY_KEY = KEY_PREFIX + ":idempotency:{}:{}"
# How long an Idempotency-Key is remembered (Stripe's: 24 hours).
IDEMPOTENCY_SECONDS = 24 * 3600
# How long a claim lasts while its request is being processed (inputs probed, job queued).
IDEMPOTENCY_PENDING_SECONDS = 600
# What a video id looks like (new_video_id); anything else never names a folder.
VIDEO_ID_RE = re.compile(r"video_[0-9a-f]{32}")
CLEANUP_LOCK_KEY = KEY_PREFIX + ":cleanup-lock"  # one API process sweeps at a time


class VideoStatus(str, Enum):
    queued = "queued"
    in_progress = "in_progress"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


FINISHED = frozenset({VideoStatus.completed, VideoStatus.failed, VideoStatus.cancelled})


class VideoError(BaseModel):
    code: str
    message: str


class VideoRecord(BaseModel):
    """Everything the service knows about one video."""

    id: str
    model: str
    status: VideoStatus = VideoStatus.queued
    progress: int = 0  # 0..100
    created_at: int
    started_at: float | None = None
    completed_at: int | None = None
    expires_at: int | None = None
    seconds: str  # duration of the output, as OpenAI's string
    size: str  # "WxH"
    prompt: str | None = None
    task: Task
    spec: TaskSpec
    remixed_from_video_id: str | None = None
    error: VideoError | None = None
    # Input kind ("image", "video", "audio") -> file name in the video's folder.
    inputs: dict[str, str] = Field(default_factory=dict)
    # Download variant ("video", "thumbnail", "spritesheet", "image") -> file name.
    outputs: dict[str, str] = Field(default_factory=dict)
    stage: str | None = None  # what the worker is doing now
    attempts: int = 0  # runs started (more than 1 after a worker died mid-job)
    worker: str | None = None
    tokens: dict[str, int] | None = None
    timings: dict[str, float] | None = None
    has_audio: bool = False
    # Worker's acknowledgement of a cancel: when sampling actually stopped.
    stopped_at: float | None = None
    # Jobs the worker ran together with this one, itself included (1: alone).
    batch_size: int | None = None
    # Duration of the input video as probed at intake: what the worker batches by.
    input_seconds: float | None = None
    cancel_requested_at: float | None = None
    # Owner id of the API key that created it (core/keys.py); None when the API was open.
    owner: str | None = None
    # The Redis key of its Idempotency-Key claim, released when the video is deleted.
    idempotency_claim: str | None = None
    # Its queue's level (core/queue.py PRIORITIES): high, normal or low.
    priority: str = "normal"
    # Where its finish event goes besides the server's endpoints (core/webhooks.py); never
    # shown in the video object.
    webhook_url: str | None = None
    # Live previews (the create's `preview`): the worker stores the frames decoded so far as
    # preview.mp4 (workers/previews.py) while it samples the rest.
    preview: bool = False
    preview_frames: int = 0  # pixel frames in the latest preview.mp4
    # The latent frame (0-based) whose completion made the latest preview; None: none yet.
    preview_index: int | None = None


# Sets fields only while the record exists, each field named in ARGV[2] (a JSON object of
# field -> JSON-encoded value) holds that value, and its status is one of ARGV[1] (a JSON list
# of JSON-encoded statuses; empty list: any status). Returns 1 when set, 0 when the status did
# not match, -1 when the record is gone, -2 when an expected field differs.
_TRANSITION = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
for name, value in pairs(cjson.decode(ARGV[2])) do
  if redis.call('HGET', KEYS[1], name) ~= value then return -2 end
end
local allowed = cjson.decode(ARGV[1])
local ok = (#allowed == 0)
for _, s in ipairs(allowed) do
  if s == status then ok = true end
end
if not ok then return 0 end
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 1
"""


def format_seconds(seconds: float) -> str:
    """OpenAI's `seconds` string: "2.125", "4" (millisecond precision, no trailing zeros)."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


def new_video_id() -> str:
    return "video_" + uuid.uuid4().hex


def _encode(value: Any) -> str:
    return json.dumps(to_jsonable_python(value))


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used with another request, or its first request still runs."""


# Claim KEYS[1] with ARGV[1] for ARGV[2] seconds unless it is held; returns the holder's value.
_CLAIM = """
local held = redis.call('GET', KEYS[1])
if held then return held end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
"""
# Delete KEYS[1] only while it holds ARGV[1] (our own claim).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Store:
    """Records in Redis (a client with ``decode_responses=True``) and files in `artifacts` (a
    path: the folder store there)."""

    def __init__(
        self, redis: Redis, artifacts: Artifacts | Path, retention_seconds: int = 24 * 3600
    ):
        self.redis = redis
        self.artifacts = (
            artifacts if isinstance(artifacts, Artifacts) else FolderArtifacts(Path(artifacts))
        )
        self.retention_seconds = retention_seconds
        self._transition = redis.register_script(_TRANSITION)
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)

    # --- files -------------------------------------------------------------------------
    def video_dir(self, video_id: str) -> Path:
        """The video's folder (folder store only; object storage has none)."""
        if not VIDEO_ID_RE.fullmatch(video_id):
            # Ids come from new_video_id(); this keeps any other string out of the path.
            raise ValueError(f"not a video id: {video_id!r}")
        if not isinstance(self.artifacts, FolderArtifacts):
            raise TypeError(f"{self.artifacts.describe()} keeps no folder per video")
        return self.artifacts.folder(video_id)

    def path(self, video_id: str, name: str) -> Path:
        return self.video_dir(video_id) / name

    # --- records -----------------------------------------------------------------------
    def create(self, record: VideoRecord) -> None:
        """Store a new record and index it (all videos; its owner's). An Idempotency-Key claim is
        settled apart, by `complete_idempotency`."""
        fields: dict[Any, str] = {
            name: _encode(value) for name, value in record.model_dump(mode="json").items()
        }
        created = time.time_ns() // 1000
        with self.redis.pipeline() as pipe:
            pipe.hset(RECORD_KEY.format(record.id), mapping=fields)
            pipe.zadd(INDEX_KEY, {record.id: created})
            if record.owner is not None:
                pipe.zadd(OWNER_INDEX_KEY.format(record.owner), {record.id: created})
            pipe.execute()

    # --- Idempotency-Key ---------------------------------------------------------------
    @staticmethod
    def idempotency_claim_key(owner: str | None, idempotency_key: str) -> str:
        return IDEMPOTENCY_KEY.format(owner or "-", idempotency_key)

    def claim_idempotency(
        self, claim_key: str, video_id: str, fingerprint: str
    ) -> VideoRecord | None:
        """Claim `claim_key` for a new video; or the video its earlier request made.

        Raises IdempotencyConflict when the earlier request had another fingerprint, or has
        not finished making its video yet.
        """
        mine = json.dumps({"video_id": video_id, "fingerprint": fingerprint, "done": False})
        held = self._claim(keys=[claim_key], args=[mine, IDEMPOTENCY_PENDING_SECONDS])
        if held is None:
            return None
        claim = json.loads(held)
        if claim["fingerprint"] != fingerprint:
            raise IdempotencyConflict(
                f"this Idempotency-Key was used with another request (video {claim['video_id']}); "
                "a retry must send the same body, or use a new key"
            )
        # The record exists once its request has passed every check (even if that request
        # died before marking its claim done).
        record = self.get(claim["video_id"])
        if record is None:
            raise IdempotencyConflict(
                "a request with this Idempotency-Key is still being processed; retry shortly"
            )
        return record

    def complete_idempotency(self, claim_key: str, video_id: str, fingerprint: str) -> None:
        """The claimed video exists: remember the key for IDEMPOTENCY_SECONDS."""
        done = json.dumps({"video_id": video_id, "fingerprint": fingerprint, "done": True})
        self.redis.set(claim_key, done, ex=IDEMPOTENCY_SECONDS)

    def release_idempotency(self, claim_key: str, video_id: str, fingerprint: str) -> None:
        """Drop our pending claim (the request failed: a retry may try again)."""
        mine = json.dumps({"video_id": video_id, "fingerprint": fingerprint, "done": False})
        self._release(keys=[claim_key], args=[mine])

    def get(self, video_id: str) -> VideoRecord | None:
        raw = self.redis.hgetall(RECORD_KEY.format(video_id))
        if not raw:
            return None
        return VideoRecord.model_validate({k: json.loads(v) for k, v in raw.items()})

    def status(self, video_id: str) -> VideoStatus | None:
        """The status alone: one HGET, cheap enough to poll between sampling steps."""
        raw = self.redis.hget(RECORD_KEY.format(video_id), "status")
        return VideoStatus(json.loads(raw)) if raw else None

    def update(
        self,
        video_id: str,
        *,
        only_if: set[VideoStatus] | frozenset[VideoStatus] | None = None,
        expect: dict[str, Any] | None = None,
        **fields: Any,
    ) -> int:
        """Set fields atomically when the status is in `only_if` (any status when None) and
        every field in `expect` has that value (a worker's claim: {"attempts": n}).

        Returns 1 when set, 0 when the status did not match, -1 when the record is gone, -2
        when an expected field differs.
        """
        allowed = [_encode(s) for s in (only_if or ())]
        expected = {name: _encode(value) for name, value in (expect or {}).items()}
        args: list[str] = [json.dumps(allowed), json.dumps(expected)]
        for name in expected:
            if name not in VideoRecord.model_fields:
                raise KeyError(f"VideoRecord has no field {name!r}")
        for name, value in fields.items():
            if name not in VideoRecord.model_fields:
                raise KeyError(f"VideoRecord has no field {name!r}")
            args += [name, _encode(value)]
        return int(self._transition(keys=[RECORD_KEY.format(video_id)], args=args))

    def finish(
        self,
        video_id: str,
        status: VideoStatus,
        *,
        only_if: frozenset[VideoStatus],
        expect: dict[str, Any] | None = None,
        **fields: Any,
    ) -> int:
        """Move to a finished status, stamping completed_at and scheduling expiry (`only_if`
        and `expect` as in `update`)."""
        now = int(time.time())
        expires_at = now + self.retention_seconds
        done = self.update(
            video_id,
            only_if=only_if,
            expect=expect,
            status=status,
            completed_at=now,
            expires_at=expires_at,
            **fields,
        )
        if done == 1:
            self.redis.zadd(EXPIRY_KEY, {video_id: expires_at})
            if self.on_finish is not None:
                self._finished(video_id)
        return done

    # Called with the record once per video, by whichever finish() moved it to its finished
    # status (the API and the workers queue its webhook event here: core/webhooks.py).
    on_finish: Callable[[VideoRecord], object] | None = None

    def _finished(self, video_id: str) -> None:
        try:
            record = self.get(video_id)
            if record is not None and self.on_finish is not None:
                self.on_finish(record)
        except Exception:  # the video's status stands; only its event is lost
            logger.exception("video %s finished, but its finish hook failed", video_id)

    def list_videos(
        self,
        *,
        after: str | None = None,
        limit: int = 20,
        order: str = "desc",
        owner: str | None = None,
    ) -> tuple[list[VideoRecord], bool]:
        """A page of records in creation order (one owner's, or all when `owner` is None),
        and whether more follow."""
        index = OWNER_INDEX_KEY.format(owner) if owner is not None else INDEX_KEY
        start = 0
        if after is not None:
            rank = (
                self.redis.zrevrank(index, after)
                if order == "desc"
                else self.redis.zrank(index, after)
            )
            if rank is None:
                raise KeyError(after)
            start = cast(int, rank) + 1
        ids = cast(
            "list[str]", self.redis.zrange(index, start, start + limit, desc=(order == "desc"))
        )
        records = [r for r in (self.get(i) for i in ids[:limit]) if r is not None]
        return records, len(ids) > limit

    def delete(self, video_id: str) -> bool:
        """Remove the files and then the record. False when there was no such record. Raises
        ArtifactError (the record stays) when the artifact store cannot delete the files."""
        if VIDEO_ID_RE.fullmatch(video_id):
            self.artifacts.delete(video_id)
        owner, claim = cast(
            "list[str | None]",
            self.redis.hmget(RECORD_KEY.format(video_id), ["owner", "idempotency_claim"]),
        )
        with self.redis.pipeline() as pipe:
            pipe.delete(RECORD_KEY.format(video_id))
            pipe.zrem(INDEX_KEY, video_id)
            pipe.zrem(EXPIRY_KEY, video_id)
            if owner and json.loads(owner):
                pipe.zrem(OWNER_INDEX_KEY.format(json.loads(owner)), video_id)
            if claim and json.loads(claim):
                pipe.delete(json.loads(claim))
            existed = pipe.execute()[0]
        return bool(existed)

    def delete_expired(self, now: float | None = None) -> list[str]:
        """Delete every video whose expires_at has passed; returns their ids."""
        now = time.time() if now is None else now
        expired = cast("list[str]", self.redis.zrangebyscore(EXPIRY_KEY, 0, now))
        deleted = []
        for video_id in expired:
            try:
                self.delete(video_id)
            except ArtifactError as exc:  # kept in the expiry set: the next sweep tries again
                logger.warning("expired video %s not deleted yet: %s", video_id, exc)
                continue
            deleted.append(video_id)
            logger.info("deleted expired video %s", video_id)
        return deleted

    def sweep(self, lock_seconds: int) -> list[str]:
        """delete_expired() under a lock, so one of several API processes does it."""
        if not self.redis.set(CLEANUP_LOCK_KEY, "1", nx=True, ex=max(1, lock_seconds)):
            return []
        return self.delete_expired()
