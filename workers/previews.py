"""Live previews: while a video is sampled, the frames decoded so far as a short mp4.

The video tokenizer is causal in time, so each finished latent frame can be decoded while the
rest is sampled. The engine hands those frames to `publish_preview`, which encodes them
(H.264, no audio), stores them as ``preview.mp4`` under the video's id in the artifact store
and records it (``outputs["preview"]``, ``preview_frames``, ``preview_index``); the API serves
it as ``GET /v1/videos/{id}/content?variant=preview`` and announces each new one as a
``preview`` event on ``/events``.

A preview is a courtesy, not a result: a failure to encode or store one is logged and the job
goes on.
"""

from __future__ import annotations

import logging
import os
import uuid

import numpy as np
from redis.exceptions import RedisError

from core.artifacts import ArtifactError
from core.store import Store, VideoStatus
from models import media
from workers import metrics

logger = logging.getLogger(__name__)

# The file a video's latest preview is stored as, and its download variant.
PREVIEW_NAME = "preview.mp4"
PREVIEW_VARIANT = "preview"
RUNNING = frozenset({VideoStatus.in_progress})


def publish_preview(
    store: Store,
    video_id: str,
    frames: np.ndarray,
    fps: float,
    index: int,
    *,
    expect: int | None = None,
    timeout: float = media.DEFAULT_TIMEOUT,
) -> bool:
    """Store `frames` ((T, H, W, 3) uint8: the frames decoded so far) as the video's
    preview.mp4 and record it as made by latent frame `index` (0-based). Returns whether the
    record took it.

    Only a video that asked for previews and is still in_progress takes one, and, with
    `expect`, only while its `attempts` equals it (the run's claim: a run that lost the video
    to another publishes nothing). Each call encodes into a file of its own, so calls may come
    from any thread; the record holds whichever call wrote last, so publish one video's
    previews in order, one at a time. An encode or storage failure (ffmpeg, the artifact
    store, Redis) is logged as a warning and returns False; frames of the wrong shape are a
    ValueError.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be (T, H, W, 3) uint8 with T >= 1; got {frames.shape}")
    if index < 0 or not fps > 0:
        raise ValueError(f"index must be >= 0 and fps > 0; got index {index}, fps {fps}")
    claim = {"attempts": expect} if expect is not None else None
    try:
        record = store.get(video_id)
        if (
            record is None
            or not record.preview
            or record.status not in RUNNING
            or (expect is not None and record.attempts != expect)
        ):
            return False  # not asked for, finished, deleted or no longer this run's
        _store_preview(store, video_id, frames, fps, timeout)
        done = store.update(
            video_id,
            only_if=RUNNING,
            expect=claim,
            # Only the run's completion writes outputs again, and it moves the status first.
            outputs={**record.outputs, PREVIEW_VARIANT: PREVIEW_NAME},
            preview_frames=len(frames),
            preview_index=index,
        )
    except (ArtifactError, media.MediaError, OSError, RedisError) as exc:
        logger.warning("preview %d of video %s not published: %s", index, video_id, exc)
        return False
    if done == -1:  # deleted while it was encoded: the file just stored must go too
        try:
            store.artifacts.delete(video_id)
        except ArtifactError as exc:
            logger.warning("preview of deleted video %s not removed: %s", video_id, exc)
    if done != 1:
        return False
    metrics.PREVIEWS.labels(record.model).inc()
    return True


def _store_preview(
    store: Store, video_id: str, frames: np.ndarray, fps: float, timeout: float
) -> None:
    """Encode into a file of this call's own, then put it in place as preview.mp4 in one
    step, so a download never sees half a file or none."""
    artifacts = store.artifacts
    with artifacts.scratch(video_id) as folder:
        part = folder / f"preview-{uuid.uuid4().hex}.mp4"
        try:
            media.encode_video(part, frames, fps, timeout=timeout)
            dest = artifacts.local_path(video_id, PREVIEW_NAME)
            if dest is not None and dest.parent == folder:
                # The folder store writes in the video's own folder: a rename replaces the
                # old preview atomically (its put_file unlinks, then links).
                os.replace(part, dest)
            else:  # object storage: one PUT replaces the object
                artifacts.put_file(video_id, PREVIEW_NAME, part)
        finally:
            part.unlink(missing_ok=True)
