"""The Videos API, in OpenAI's shape (`client.videos.*` of the openai SDK works unchanged),
plus VideoPoet's extensions: cancel, SSE progress events, Idempotency-Key."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.errors import APIError, Conflict, InvalidRequest, NotFound
from app.intake import read_create_request
from app.metrics import REQUESTS
from app.schemas import Reference, Video, VideoDeleted, VideoList
from app.state import AppState, get_state
from app.store import FINISHED, VideoRecord, VideoStatus
from models.spec import Task

router = APIRouter(prefix="/v1", tags=["videos"])
StateDep = Annotated[AppState, Depends(get_state)]
VideoId = Annotated[str, Path(description="The video's id (video_...).")]

# Which tasks each creating endpoint runs (first: its default).
EDIT_TASKS = frozenset({Task.stylize, Task.inpaint, Task.outpaint, Task.video_to_audio})
EXTEND_TASKS = frozenset({Task.continuation, Task.av_continuation})
REMIX_TASKS = frozenset({Task.stylize})
MEDIA_TYPES = {
    ".mp4": "video/mp4",
    ".webp": "image/webp",
    ".jpg": "image/jpeg",
    ".png": "image/png",
}
# How often the SSE stream looks at the record.
EVENTS_POLL_SECONDS = 0.5


def _get_record(state: AppState, video_id: str) -> VideoRecord:
    record = state.store.get(video_id)
    if record is None:
        raise NotFound(f"no video with id {video_id!r}", param="video_id")
    return record


async def _create(
    request: Request,
    state: AppState,
    *,
    endpoint: str,
    default_task: Task | None = None,
    allowed_tasks: frozenset[Task] | None = None,
    remix_of: VideoRecord | None = None,
) -> Video:
    task_label = default_task.value if default_task else "unknown"
    status = 500
    try:
        create = await read_create_request(request, state.settings)
        if create.fields.task is not None:
            task_label = create.fields.task.value
        if remix_of is not None:
            if create.fields.video is not None or "video" in create.uploads:
                raise InvalidRequest("remix takes its video from the path; leave `video` out")
            if remix_of.status is not VideoStatus.completed:
                raise Conflict(
                    f"video {remix_of.id} is {remix_of.status.value}; only a completed video "
                    "can be remixed"
                )
            create.fields.video = Reference(id=remix_of.id)
        record = await run_in_threadpool(
            state.intake.create,
            create,
            default_task=default_task,
            allowed_tasks=allowed_tasks,
            remixed_from=remix_of.id if remix_of else None,
            idempotency_key=request.headers.get("idempotency-key"),
        )
        task_label = record.task.value
        status = 200
        return Video.from_record(record)
    except APIError as exc:
        status = exc.status_code
        raise
    finally:
        await request.close()
        REQUESTS.labels(endpoint, task_label, str(status)).inc()


@router.post("/videos", response_model=Video)
async def create_video(request: Request, state: StateDep) -> Video:
    """Create a video job (JSON, or multipart with `input_reference`/`image`/`video`/`audio`)."""
    return await _create(request, state, endpoint="create")


@router.post("/videos/edits", response_model=Video)
async def edit_video(request: Request, state: StateDep) -> Video:
    """Edit a video (upload or {"id"}): stylize by default; inpaint, outpaint, video_to_audio."""
    return await _create(
        request, state, endpoint="edit", default_task=Task.stylize, allowed_tasks=EDIT_TASKS
    )


@router.post("/videos/extensions", response_model=Video)
async def extend_video(request: Request, state: StateDep) -> Video:
    """Extend a video (upload or {"id"}) by `seconds`: continuation, or av_continuation."""
    return await _create(
        request,
        state,
        endpoint="extend",
        default_task=Task.continuation,
        allowed_tasks=EXTEND_TASKS,
    )


@router.post("/videos/{video_id}/remix", response_model=Video)
async def remix_video(video_id: VideoId, request: Request, state: StateDep) -> Video:
    """Restyle a completed video with a new prompt (a stylize job on its output)."""
    source = await run_in_threadpool(_get_record, state, video_id)
    return await _create(
        request,
        state,
        endpoint="remix",
        default_task=Task.stylize,
        allowed_tasks=REMIX_TASKS,
        remix_of=source,
    )


@router.get("/videos", response_model=VideoList)
def list_videos(
    state: StateDep,
    after: Annotated[
        str | None, Query(description="Id of the last video of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
) -> VideoList:
    """List videos, newest first by default, with a cursor (`after`)."""
    try:
        records, has_more = state.store.list_videos(after=after, limit=limit, order=order)
    except KeyError:
        raise InvalidRequest(
            f"after={after!r} is not the id of a listed video", param="after"
        ) from None
    data = [Video.from_record(r) for r in records]
    return VideoList(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=has_more,
    )


@router.get("/videos/{video_id}", response_model=Video)
def retrieve_video(video_id: VideoId, state: StateDep, response: Response) -> Video:
    """A video's status and progress (`openai-poll-after-ms` says when to ask again)."""
    record = _get_record(state, video_id)
    if record.status not in FINISHED:
        response.headers["openai-poll-after-ms"] = str(state.settings.poll_after_ms)
    return Video.from_record(record)


@router.delete("/videos/{video_id}", response_model=VideoDeleted)
def delete_video(video_id: VideoId, state: StateDep) -> VideoDeleted:
    """Delete a video and its files (a queued or running one is cancelled first)."""
    record = _get_record(state, video_id)
    if record.status not in FINISHED:
        _cancel(state, record)
    state.store.delete(video_id)
    return VideoDeleted(id=video_id)


@router.post("/videos/{video_id}/cancel", response_model=Video)
def cancel_video(video_id: VideoId, state: StateDep) -> Video:
    """Cancel a queued (never runs) or running (sampling stops within a second) video."""
    record = _get_record(state, video_id)
    if record.status in FINISHED:
        raise Conflict(
            f"video {video_id} is {record.status.value}; only queued or in_progress videos "
            "can be cancelled"
        )
    _cancel(state, record)
    return Video.from_record(_get_record(state, video_id))


def _cancel(state: AppState, record: VideoRecord) -> None:
    done = state.store.finish(
        record.id,
        VideoStatus.cancelled,
        only_if=frozenset({VideoStatus.queued, VideoStatus.in_progress}),
        cancel_requested_at=time.time(),
    )
    if done == 1:
        state.queue.cancel(record.id)


@router.get(
    "/videos/{video_id}/content",
    response_class=FileResponse,
    responses={200: {"content": {t: {} for t in MEDIA_TYPES.values()}}},
)
def download_content(
    video_id: VideoId,
    state: StateDep,
    variant: Annotated[
        Literal["video", "thumbnail", "spritesheet", "image"],
        Query(description="video (mp4), thumbnail (webp), spritesheet (jpg), image (png, stills)"),
    ] = "video",
) -> FileResponse:
    """Download the mp4, or its thumbnail, spritesheet, or the PNG of a still."""
    record = _get_record(state, video_id)
    if record.status is not VideoStatus.completed:
        raise Conflict(
            f"video {video_id} is {record.status.value}; content is available once completed"
        )
    name = record.outputs.get(variant)
    if name is None:
        raise NotFound(
            f"video {video_id} has no {variant}; available: {', '.join(sorted(record.outputs))}",
            param="variant",
        )
    path = state.store.path(video_id, name)
    if not path.is_file():
        raise NotFound(f"the {variant} of video {video_id} is no longer stored", param="variant")
    media_type = MEDIA_TYPES.get(path.suffix, "application/octet-stream")
    return FileResponse(path, media_type=media_type, filename=f"{video_id}{path.suffix}")


@router.get("/videos/{video_id}/events")
async def video_events(video_id: VideoId, state: StateDep) -> StreamingResponse:
    """Server-sent events: the video object each time its status or progress changes."""
    await run_in_threadpool(_get_record, state, video_id)

    async def stream() -> AsyncIterator[str]:
        last = None
        while True:
            record = await run_in_threadpool(state.store.get, video_id)
            if record is None:
                yield f"event: error\ndata: {json.dumps({'message': 'video deleted'})}\n\n"
                return
            video = Video.from_record(record)
            key = (video.status, video.progress)
            if key != last:
                last = key
                yield f"event: video\ndata: {video.model_dump_json()}\n\n"
            if record.status in FINISHED:
                return
            await asyncio.sleep(EVENTS_POLL_SECONDS)

    return StreamingResponse(stream(), media_type="text/event-stream")
