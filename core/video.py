"""The video object, in the OpenAI Videos API's shape plus VideoPoet's fields: what the API
returns for a video (app/routes/videos.py) and what a webhook event carries (core/webhooks.py).
Torch-free, built from the record alone."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from core.store import VideoError, VideoRecord, VideoStatus
from models.spec import Task


class Video(BaseModel):
    """The video object (OpenAI's fields first, then VideoPoet's)."""

    id: str
    object: Literal["video"] = "video"
    model: str
    status: VideoStatus
    progress: int
    created_at: int
    completed_at: int | None = None
    expires_at: int | None = None
    seconds: str
    size: str
    prompt: str | None = None
    error: VideoError | None = None
    remixed_from_video_id: str | None = None
    task: Task
    seed: int | None = None
    # the guidance the job runs with: the request's, or the model card's when it named none
    guidance_scale: float | None = None
    with_audio: bool = False
    priority: str = "normal"
    # While queued: how many jobs a worker takes before this one (0: next); else null.
    queue_position: int | None = None

    @classmethod
    def from_record(cls, record: VideoRecord, queue_position: int | None = None) -> Video:
        return cls(
            id=record.id,
            model=record.model,
            status=record.status,
            progress=record.progress,
            created_at=record.created_at,
            completed_at=record.completed_at,
            expires_at=record.expires_at,
            seconds=record.seconds,
            size=record.size,
            prompt=record.prompt,
            error=record.error,
            remixed_from_video_id=record.remixed_from_video_id,
            task=record.task,
            seed=record.spec.seed,
            guidance_scale=record.spec.guidance_scale,
            with_audio=record.spec.with_audio,
            priority=record.priority,
            queue_position=queue_position if record.status is VideoStatus.queued else None,
        )
