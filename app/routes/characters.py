"""Characters: `POST /v1/videos/characters` stores a reusable reference (a name and an image
or a video) under the caller's key, `GET /v1/videos/characters/{id}` returns it (404 for
another key's), `DELETE` removes it. A create names one as its input with
`{"character_id": "char_..."}` (app/intake.py resolves it like an upload).

The openai SDK's `client.videos.create_character(name=, video=)` and `get_character(id)`
work unchanged.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app.auth import Caller, CallerDep, authenticate
from app.errors import (
    APIError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from app.intake import _check_file_type, max_body_bytes
from app.metrics import REQUESTS
from app.schemas import Character, CharacterDeleted, ErrorResponse
from app.state import AppState, get_state
from core.artifacts import ArtifactError
from core.characters import MAX_NAME_CHARS, CharacterRecord, Characters, new_character_id

# The multipart fields that may carry the reference (the SDK sends `video`).
FILE_FIELDS = ("video", "image")


def _errors(*codes: int) -> dict[int | str, dict]:
    return {code: {"model": ErrorResponse} for code in codes}


router = APIRouter(
    prefix="/v1",
    tags=["characters"],
    dependencies=[Depends(authenticate)],
    responses=_errors(401, 422, 429, 503),
)
StateDep = Annotated[AppState, Depends(get_state)]
CharacterId = Annotated[str, PathParam(description="The character's id (char_...).")]

CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "maxLength": MAX_NAME_CHARS},
                        "video": {"type": "string", "format": "binary"},
                        "image": {"type": "string", "format": "binary"},
                    },
                }
            }
        },
    }
}


def _get(state: AppState, caller: Caller, character_id: str) -> CharacterRecord:
    """The character, when it exists and the caller's key made it (else 404, as videos)."""
    record = Characters(state.store).get(character_id)
    if record is None or not caller.may_see(record.owner):
        raise NotFound(f"no character with id {character_id!r}", param="character_id")
    return record


async def _read_form(request: Request, state: AppState) -> tuple[str, str, UploadFile]:
    """(name, field, file) of a create_character body; 4xx saying what is accepted."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        raise UnsupportedMediaType(
            f"Content-Type {content_type or 'none'!r} is not accepted; send multipart/form-data "
            "with `name` and a `video` or `image` file",
            code="unsupported_content_type",
        )
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_body_bytes(state.settings):
        raise PayloadTooLarge(
            f"the request is {int(length)} bytes; uploads may be at most "
            f"{state.settings.max_upload_bytes} bytes (VIDEOPOET_MAX_UPLOAD_BYTES)"
        )
    form = await request.form(max_files=len(FILE_FIELDS), max_fields=10)
    name: str | None = None
    files: dict[str, UploadFile] = {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            if key != "name":
                raise InvalidRequest(
                    f"unknown field {key!r}; a character takes `name` and a `video` or `image` "
                    "file",
                    param=key,
                )
            name = value
        elif key in FILE_FIELDS and key not in files:
            files[key] = value
        else:
            raise InvalidRequest(
                f"{key}: give one file, as `video` or `image` (not both)", param=key
            )
    name = (name or "").strip()
    if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise InvalidRequest(
            f"name is required: 1 to {MAX_NAME_CHARS} printable characters", param="name"
        )
    if len(files) != 1:
        raise InvalidRequest(
            "give the character's reference as one file: `video` (a video) or `image` (an image)",
            param="video",
        )
    field, upload = next(iter(files.items()))
    return name, field, upload


def _store(
    state: AppState, caller: Caller, name: str, field: str, upload: UploadFile
) -> CharacterRecord:
    """Save the upload into a scratch folder, probe it, publish it, write the record."""
    settings = state.settings
    ext = _check_file_type(field, upload)
    character_id = new_character_id()
    artifacts = state.store.artifacts
    try:
        with artifacts.scratch(character_id) as folder:
            path = Path(folder) / f"reference{ext}"
            upload.file.seek(0)
            written = 0
            with path.open("wb") as out:
                while chunk := upload.file.read(1024 * 1024):
                    written += len(chunk)
                    if written > settings.max_upload_bytes:
                        raise PayloadTooLarge(
                            f"{field} is larger than {settings.max_upload_bytes} bytes "
                            "(VIDEOPOET_MAX_UPLOAD_BYTES)",
                            param=field,
                        )
                    out.write(chunk)
            info = state.intake._probe(field, path)
            if info.kind not in ("image", "video"):
                raise InvalidRequest(
                    f"{field}: a character is an image or a video; got {info.kind or 'no media'} "
                    f"({info.format})",
                    param=field,
                    code="invalid_file",
                )
            artifacts.publish(character_id, folder, [path.name])
        record = CharacterRecord(
            id=character_id,
            name=name,
            created_at=int(time.time()),
            kind="image" if info.kind == "image" else "video",
            file=path.name,
            width=info.width,
            height=info.height,
            seconds=info.duration if info.kind == "video" else None,
            owner=caller.owner,
        )
        Characters(state.store).create(record)
    except BaseException:
        with contextlib.suppress(ArtifactError):
            artifacts.delete(character_id)
        raise
    return record


@router.post(
    "/videos/characters",
    response_model=Character,
    responses=_errors(413, 415),
    openapi_extra=CREATE_BODY,
)
async def create_character(request: Request, state: StateDep, caller: CallerDep) -> Character:
    """Store a character: `name` and its reference as a `video` or `image` file (multipart).
    A create names it with `input_reference: {"character_id": "char_..."}`."""
    status = 500
    try:
        await run_in_threadpool(
            state.limits.check_rate,
            "creates",
            caller.identity,
            state.settings.create_rate_limit_per_minute,
        )
        name, field, upload = await _read_form(request, state)
        record = await run_in_threadpool(_store, state, caller, name, field, upload)
        status = 200
        return Character.from_record(record)
    except APIError as exc:
        status = exc.status_code
        raise
    finally:
        await request.close()
        REQUESTS.labels("create_character", "character", str(status)).inc()


@router.get("/videos/characters/{character_id}", response_model=Character, responses=_errors(404))
def get_character(character_id: CharacterId, state: StateDep, caller: CallerDep) -> Character:
    """A character the caller's key made."""
    return Character.from_record(_get(state, caller, character_id))


@router.delete(
    "/videos/characters/{character_id}",
    response_model=CharacterDeleted,
    responses=_errors(404),
)
def delete_character(
    character_id: CharacterId, state: StateDep, caller: CallerDep
) -> CharacterDeleted:
    """Delete a character and its file (videos made from it keep their own copy)."""
    _get(state, caller, character_id)
    Characters(state.store).delete(character_id)
    return CharacterDeleted(id=character_id)
