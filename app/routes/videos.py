"""The Videos API, in OpenAI's shape (`client.videos.*` of the openai SDK works unchanged),
plus VideoPoet's extensions: cancel, SSE progress events, Idempotency-Key."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import PurePath
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.auth import Caller, CallerDep, authenticate
from app.errors import APIError, Conflict, InvalidRequest, NotFound
from app.intake import check_idempotency_key, read_create_request
from app.limits import check_queue_length
from app.metrics import REQUESTS
from app.schemas import (
    ErrorResponse,
    Reference,
    Video,
    VideoDeleted,
    VideoList,
    create_body_openapi,
)
from app.state import AppState, get_state
from core.artifacts import ArtifactMissing, RangeNotSatisfiable
from core.store import FINISHED, VideoRecord, VideoStatus
from models.spec import Task


def _errors(*codes: int) -> dict[int | str, dict]:
    return {code: {"model": ErrorResponse} for code in codes}


# Every /v1 operation: no or a wrong key, a malformed request, past the caller's rate, Redis away.
router = APIRouter(
    prefix="/v1",
    tags=["videos"],
    dependencies=[Depends(authenticate)],
    responses=_errors(401, 422, 429, 503),
)
StateDep = Annotated[AppState, Depends(get_state)]
# What a create can answer besides the video (and the errors of every operation).
CREATE_RESPONSES = _errors(404, 409, 413, 415)
CREATE_BODY = create_body_openapi()
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
# How often the SSE stream looks at the record. 0.1 s: the stream is how clients (and the
# service benchmark) learn that a video of 1 to 3 s has finished or has a new preview, and
# a step of 0.5 s would add up to half a second to each such figure. The cost: one HGETALL
# of a record of about a kilobyte per open stream per step (a hundred streams: a thousand
# small reads a second, a few percent of one Redis) and its parsing in the API; a record
# that did not change sends nothing.
EVENTS_POLL_SECONDS = 0.1
# A comment line after this long without an event keeps proxies from closing the stream.
EVENTS_KEEPALIVE_SECONDS = 15.0
# How long an EventSource waits before reconnecting after a dropped stream.
EVENTS_RETRY_MS = 1000


def _get_record(state: AppState, caller: Caller, video_id: str) -> VideoRecord:
    """The video, when it exists and the caller's key made it (else 404: one key cannot even
    learn that another's video exists)."""
    record = state.store.get(video_id)
    if record is None or not caller.may_see(record.owner):
        raise NotFound(f"no video with id {video_id!r}", param="video_id")
    return record


def _videos(state: AppState, records: list[VideoRecord]) -> list[Video]:
    """The video objects of `records`, with the queue position of those still queued."""
    queued = [(r.id, r.priority) for r in records if r.status is VideoStatus.queued]
    positions = state.queue.positions(queued)
    return [Video.from_record(r, positions.get(r.id)) for r in records]


def _video(state: AppState, record: VideoRecord) -> Video:
    return _videos(state, [record])[0]


def _admit(state: AppState, caller: Caller) -> None:
    """A create's own limits, before its body is read: the caller's create rate (429) and
    the queue's length (503)."""
    settings = state.settings
    state.limits.check_rate("creates", caller.identity, settings.create_rate_limit_per_minute)
    check_queue_length(state.queue.depth(), settings.max_queue_length)


async def _create(
    request: Request,
    state: AppState,
    caller: Caller,
    *,
    endpoint: str,
    default_task: Task | None = None,
    allowed_tasks: frozenset[Task] | None = None,
    remix_of: VideoRecord | None = None,
) -> Video:
    task_label = default_task.value if default_task else "unknown"
    status = 500
    try:
        idempotency_key = check_idempotency_key(request.headers.get("idempotency-key"))
        await run_in_threadpool(_admit, state, caller)
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
            idempotency_key=idempotency_key,
            owner=caller.owner,
            identity=caller.identity,
        )
        task_label = record.task.value
        status = 200
        return await run_in_threadpool(_video, state, record)
    except APIError as exc:
        status = exc.status_code
        raise
    finally:
        await request.close()
        REQUESTS.labels(endpoint, task_label, str(status)).inc()


@router.post("/videos", response_model=Video, responses=CREATE_RESPONSES, openapi_extra=CREATE_BODY)
async def create_video(request: Request, state: StateDep, caller: CallerDep) -> Video:
    """Create a video job (JSON, or multipart with `input_reference`/`image`/`video`/`audio`)."""
    return await _create(request, state, caller, endpoint="create")


@router.post(
    "/videos/edits", response_model=Video, responses=CREATE_RESPONSES, openapi_extra=CREATE_BODY
)
async def edit_video(request: Request, state: StateDep, caller: CallerDep) -> Video:
    """Edit a video (upload or {"id"}): stylize by default; inpaint, outpaint, video_to_audio."""
    return await _create(
        request,
        state,
        caller,
        endpoint="edit",
        default_task=Task.stylize,
        allowed_tasks=EDIT_TASKS,
    )


@router.post(
    "/videos/extensions",
    response_model=Video,
    responses=CREATE_RESPONSES,
    openapi_extra=CREATE_BODY,
)
async def extend_video(request: Request, state: StateDep, caller: CallerDep) -> Video:
    """Extend a video (upload or {"id"}) by `seconds`: continuation, or av_continuation."""
    return await _create(
        request,
        state,
        caller,
        endpoint="extend",
        default_task=Task.continuation,
        allowed_tasks=EXTEND_TASKS,
    )


@router.post(
    "/videos/{video_id}/remix",
    response_model=Video,
    responses=CREATE_RESPONSES,
    openapi_extra=CREATE_BODY,
)
async def remix_video(
    video_id: VideoId, request: Request, state: StateDep, caller: CallerDep
) -> Video:
    """Restyle a completed video with a new prompt (a stylize job on its output)."""
    source = await run_in_threadpool(_get_record, state, caller, video_id)
    return await _create(
        request,
        state,
        caller,
        endpoint="remix",
        default_task=Task.stylize,
        allowed_tasks=REMIX_TASKS,
        remix_of=source,
    )


@router.get("/videos", response_model=VideoList)
def list_videos(
    state: StateDep,
    caller: CallerDep,
    after: Annotated[
        str | None, Query(description="Id of the last video of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
) -> VideoList:
    """List videos, newest first by default, with a cursor (`after`)."""
    try:
        records, has_more = state.store.list_videos(
            after=after, limit=limit, order=order, owner=caller.owner
        )
    except KeyError:
        raise InvalidRequest(
            f"after={after!r} is not the id of a listed video", param="after"
        ) from None
    data = _videos(state, records)
    return VideoList(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=has_more,
    )


@router.get("/videos/{video_id}", response_model=Video, responses=_errors(404))
def retrieve_video(
    video_id: VideoId, state: StateDep, caller: CallerDep, response: Response
) -> Video:
    """A video's status and progress (`openai-poll-after-ms` says when to ask again)."""
    record = _get_record(state, caller, video_id)
    if record.status not in FINISHED:
        response.headers["openai-poll-after-ms"] = str(state.settings.poll_after_ms)
    return _video(state, record)


@router.delete("/videos/{video_id}", response_model=VideoDeleted, responses=_errors(404))
def delete_video(video_id: VideoId, state: StateDep, caller: CallerDep) -> VideoDeleted:
    """Delete a video and its files (a queued or running one is cancelled first)."""
    record = _get_record(state, caller, video_id)
    if record.status not in FINISHED:
        _cancel(state, record)
    state.store.delete(video_id)
    state.limits.release_slot(caller.identity, video_id)
    return VideoDeleted(id=video_id)


@router.post("/videos/{video_id}/cancel", response_model=Video, responses=_errors(404, 409))
def cancel_video(video_id: VideoId, state: StateDep, caller: CallerDep) -> Video:
    """Cancel a queued (never runs) or running (sampling stops within a second) video."""
    record = _get_record(state, caller, video_id)
    if record.status in FINISHED:
        raise Conflict(
            f"video {video_id} is {record.status.value}; only queued or in_progress videos "
            "can be cancelled"
        )
    _cancel(state, record)
    return _video(state, _get_record(state, caller, video_id))


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
    responses={
        200: {"content": {t: {} for t in MEDIA_TYPES.values()}},
        206: {"description": "The byte range a Range header asked for"},
        302: {"description": "VIDEOPOET_S3_PRESIGN: a presigned URL of the file (Location)"},
        **_errors(404, 409, 416),
    },
)
def download_content(
    video_id: VideoId,
    request: Request,
    state: StateDep,
    caller: CallerDep,
    variant: Annotated[
        Literal["video", "thumbnail", "spritesheet", "image", "preview"],
        Query(
            description="video (mp4), thumbnail (webp), spritesheet (jpg), image (png, stills), "
            "preview (mp4 of the frames made so far; created with preview: true)"
        ),
    ] = "video",
) -> Response:
    """Download the mp4, or its thumbnail, spritesheet, the PNG of a still, or the latest
    preview (byte ranges served; with VIDEOPOET_S3_PRESIGN, a 302 to a presigned URL that
    expires)."""
    record = _get_record(state, caller, video_id)
    if variant == "preview":
        name = _preview_name(record)
        if name is None:
            how = "" if record.preview else "create the video with preview: true; "
            raise NotFound(
                f"video {video_id} has no preview yet: {how}previews appear as its frames are made",
                param="variant",
            )
    else:
        if record.status is not VideoStatus.completed:
            raise Conflict(
                f"video {video_id} is {record.status.value}; content is available once "
                "completed (while it is made: variant=preview, for a video created with "
                "preview: true)"
            )
        name = record.outputs.get(variant)
        if name is None:
            available = ", ".join(sorted(set(record.outputs) - {"preview"}))
            raise NotFound(
                f"video {video_id} has no {variant}; available: {available}", param="variant"
            )
    suffix = PurePath(name).suffix
    media_type = MEDIA_TYPES.get(suffix, "application/octet-stream")
    filename = f"{video_id}-preview{suffix}" if variant == "preview" else f"{video_id}{suffix}"
    gone = NotFound(f"the {variant} of video {video_id} is no longer stored", param="variant")
    # A preview is replaced under the same name as frames are made: caches must ask again.
    fresh = {"Cache-Control": "no-cache"} if variant == "preview" else {}
    artifacts = state.store.artifacts
    path = artifacts.local_path(video_id, name)
    if path is not None and variant != "preview":
        # The folder store: Starlette serves the file (and byte ranges). Not a preview:
        # Starlette reads its size before it opens it, and a new preview may be renamed
        # over it in between; `read` below sizes the file it opened.
        if not path.is_file():
            raise gone
        return FileResponse(path, media_type=media_type, filename=filename)
    if state.settings.s3_presign:
        if not artifacts.exists(video_id, name):
            raise gone
        url = artifacts.presign(
            video_id,
            name,
            expires_seconds=state.settings.s3_presign_seconds,
            filename=filename,
            media_type=media_type,
        )
        if url is not None:
            return RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})
    try:
        blob = artifacts.read(video_id, name, request.headers.get("range"))
    except ArtifactMissing:
        raise gone from None
    except RangeNotSatisfiable as exc:
        return Response(status_code=416, headers={"Content-Range": f"bytes */{exc.total}"})
    return StreamingResponse(
        blob.chunks,
        status_code=blob.status,
        media_type=media_type,
        headers={
            **blob.headers(),
            **fresh,
            "Content-Disposition": f'attachment; filename="{filename}"',
        },
    )


def _preview_name(record: VideoRecord) -> str | None:
    """The stored file of the video's latest preview, or None before the first. Its
    completion writes the final outputs over the running ones, so a recorded preview index
    names the file too."""
    name = record.outputs.get("preview")
    if name is None and record.preview_index is not None:
        name = "preview.mp4"  # workers/previews.py PREVIEW_NAME (the API imports no workers)
    return name


def _event_id(record: VideoRecord) -> str:
    """An SSE id naming one state of a video: attempt, progress, status, stage; and, once it
    has one, its latest preview (`1.p3.40.in_progress.text_to_video`)."""
    preview = f"p{record.preview_index}." if record.preview_index is not None else ""
    return (
        f"{record.attempts}.{preview}{record.progress}.{record.status.value}.{record.stage or ''}"
    )


# The attempt and preview index in an event id of _event_id.
_PREVIEW_IN_ID = re.compile(r"(\d+)\.p(\d+)\.")


def _preview_seen(event_id: str | None) -> tuple[int, int] | None:
    """(attempt, preview index) of the latest preview a client had seen when it got the
    event `event_id`; None when it had seen none."""
    match = _PREVIEW_IN_ID.match(event_id or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def _preview_event(record: VideoRecord) -> str:
    """The `preview` event of the record's latest preview. It carries no id: the `video`
    event that follows it in the same poll names the state (so a client cut off between
    the two resumes before both and gets the preview again, not a gap)."""
    data = {
        "id": record.id,
        "frame_index": record.preview_index,
        "frames": record.preview_frames,
        "url": f"/v1/videos/{record.id}/content?variant=preview",
    }
    return _sse("preview", json.dumps(data))


def _sse(event: str, data: str, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


@router.get(
    "/videos/{video_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}},
        204: {"description": "Nothing left"},
        **_errors(404),
    },
)
async def video_events(
    video_id: VideoId,
    state: StateDep,
    caller: CallerDep,
    last_event_id: Annotated[
        str | None, Header(description="Resume: the id of the last event received.")
    ] = None,
) -> Response:
    """Server-sent events: `video` (the video object plus `stage`) at each change of status,
    progress or stage, and before it `preview` at each new preview (created with preview:
    true), ending at a terminal status (or `deleted`); resumable with Last-Event-ID."""
    record = await run_in_threadpool(_get_record, state, caller, video_id)
    if record.status in FINISHED and last_event_id == _event_id(record):
        # The client saw the end already: 204 tells an EventSource not to reconnect.
        return Response(status_code=204)

    async def stream() -> AsyncIterator[str]:
        yield f"retry: {EVENTS_RETRY_MS}\n\n"
        last = last_event_id
        preview_seen = _preview_seen(last_event_id)
        quiet_since = time.monotonic()
        current: VideoRecord | None = record
        while True:
            if current is None:
                gone = {"id": video_id, "message": "the video was deleted"}
                yield _sse("deleted", json.dumps(gone))
                return
            event_id = _event_id(current)
            if event_id != last:
                last, quiet_since = event_id, time.monotonic()
                if current.preview_index is not None:
                    # A new preview (of this run: a run after a lost worker starts again
                    # from frame 0) goes first, so it comes before the terminal event.
                    preview = (current.attempts, current.preview_index)
                    if preview != preview_seen:
                        preview_seen = preview
                        yield _preview_event(current)
                video = await run_in_threadpool(_video, state, current)
                data = video.model_dump(mode="json")
                data["stage"] = current.stage
                yield _sse("video", json.dumps(data), event_id)
            elif time.monotonic() - quiet_since >= EVENTS_KEEPALIVE_SECONDS:
                quiet_since = time.monotonic()
                yield ": keep-alive\n\n"
            if current.status in FINISHED:
                return
            await asyncio.sleep(EVENTS_POLL_SECONDS)
            current = await run_in_threadpool(state.store.get, video_id)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
