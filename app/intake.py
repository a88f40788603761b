"""From a request to a queued job: read the body (JSON or multipart), store and probe the
inputs, build the task spec, check it against the model card, write the record, enqueue.

Every check happens here, before anything is queued, so a bad request gets a 4xx that says
what was wrong instead of a failed job later.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import mimetypes
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from core.artifacts import ArtifactError, ArtifactMissing
from core.characters import Characters
from core.config import Settings
from app.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from app.limits import Limits
from core.queue import DEFAULT_PRIORITY, JobQueue
from core.webhooks import WebhookError, resolve
from app.schemas import Reference, VideoCreate, describe_validation_error
from core.store import (
    IdempotencyConflict,
    Store,
    VideoRecord,
    VideoStatus,
    format_seconds,
    new_video_id,
)
from models.card import ModelCard
from models.spec import (
    AUDIO_TASKS,
    IMAGE_TASKS,
    TASK_INPUTS,
    Input,
    Task,
    TaskSpec,
    TaskSpecError,
    output_frames,
    random_seed,
)
from models.media import STILL_VIDEO_SECONDS, MediaError, MediaInfo, probe

logger = logging.getLogger(__name__)

# Fields that may carry a file (upload) or a reference ({"id": ...} / data URL).
FILE_FIELDS = ("input_reference", "image", "video", "audio")
# File name extensions accepted per kind of input.
EXTENSIONS = {
    "image": (".png", ".jpg", ".jpeg", ".webp", ".bmp"),
    "video": (".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi", ".gif"),
    "audio": (".wav", ".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac"),
}
ALL_EXTENSIONS = tuple(ext for exts in EXTENSIONS.values() for ext in exts)
# Multipart overhead allowed above max_upload_bytes before the body is refused unread.
FORM_OVERHEAD_BYTES = 1024 * 1024
INPUT_NAMES = {"image": Input.image, "video": Input.video, "audio": Input.audio}
# Idempotency-Key values longer than this are refused (Stripe's limit).
MAX_IDEMPOTENCY_KEY_CHARS = 255


@dataclass
class StoredInput:
    """An input file saved in the new video's folder, with what ffmpeg found in it."""

    kind: str  # "image", "video" or "audio": the slot it fills
    name: str  # file name in the video folder
    info: MediaInfo
    character: str | None = None  # the character it was copied from ({"character_id": ...})


@dataclass
class CreateRequest:
    fields: VideoCreate
    uploads: dict[str, UploadFile] = field(default_factory=dict)


def _nest(data: dict[str, Any], key: str, value: Any) -> None:
    """Put a form field into `data`: "a[]" appends to a list, "a[b]" nests a dict."""
    if key.endswith("[]"):
        data.setdefault(key[:-2], []).append(value)
    elif "[" in key and key.endswith("]"):
        outer, inner = key[:-1].split("[", 1)
        data.setdefault(outer, {})[inner] = value
    else:
        data[key] = value


def max_body_bytes(settings: Settings) -> int:
    """The largest request body read: an upload at the cap as a base64 data URL in JSON (4/3
    of its size), plus room for the other fields. (app.limits.BodyLimit holds every request
    to it; each file is then held to max_upload_bytes.)"""
    return settings.max_upload_bytes * 4 // 3 + FORM_OVERHEAD_BYTES


def _check_declared_size(request: Request, settings: Settings) -> None:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_body_bytes(settings):
        raise PayloadTooLarge(
            f"the request is {int(length)} bytes; uploads may be at most "
            f"{settings.max_upload_bytes} bytes (VIDEOPOET_MAX_UPLOAD_BYTES)"
        )


async def read_create_request(request: Request, settings: Settings) -> CreateRequest:
    """Parse a create body (JSON, multipart or urlencoded) into fields and uploads."""
    _check_declared_size(request, settings)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    data: dict[str, Any] = {}
    uploads: dict[str, UploadFile] = {}
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form(max_files=len(FILE_FIELDS), max_fields=100)
        for key, value in form.multi_items():
            if isinstance(value, str):
                _nest(data, key, value)
            elif key in FILE_FIELDS:
                if key in uploads:
                    raise InvalidRequest(f"{key}: give one file", param=key)
                uploads[key] = value
            else:
                raise InvalidRequest(
                    f"{key}: files are accepted only in {', '.join(FILE_FIELDS)}", param=key
                )
    elif content_type in ("application/json", ""):
        body = await request.body()
        if body.strip():
            try:
                data = await request.json()
            except RecursionError:
                raise InvalidRequest("the body is not valid JSON: nested too deeply") from None
            except ValueError as exc:
                raise InvalidRequest(f"the body is not valid JSON: {exc}") from exc
            if not isinstance(data, dict):
                raise InvalidRequest("the body must be a JSON object")
    else:
        raise UnsupportedMediaType(
            f"Content-Type {content_type!r} is not accepted; send application/json or "
            "multipart/form-data",
            code="unsupported_content_type",
        )
    for name, upload in uploads.items():
        if upload.size is not None and upload.size > settings.max_upload_bytes:
            raise PayloadTooLarge(
                f"{name} is {upload.size} bytes; uploads may be at most "
                f"{settings.max_upload_bytes} bytes (VIDEOPOET_MAX_UPLOAD_BYTES)",
                param=name,
            )
        data.pop(name, None)
    try:
        fields = VideoCreate.model_validate(data)
    except ValidationError as exc:
        message, param = describe_validation_error(exc)
        raise InvalidRequest(message, param=param) from exc
    return CreateRequest(fields=fields, uploads=uploads)


def parse_seconds(value: str | float | None) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise InvalidRequest(
            f'seconds must be a number of seconds such as "2" or "2.125"; got {value!r}',
            param="seconds",
        ) from None
    if not seconds > 0 or seconds != seconds:
        raise InvalidRequest(f"seconds must be greater than 0; got {value!r}", param="seconds")
    return seconds


def check_size(value: str | None, card: ModelCard) -> str:
    """The output size a request asks for, as the card spells it (None: the card's default,
    the largest it serves); 422 for one the model does not make, naming the ones it does."""
    if value is None:
        return card.default_size
    accepted = ", ".join(card.sizes)
    parts = value.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise InvalidRequest(
            f"size must be WIDTHxHEIGHT such as {card.default_size!r}; got {value!r} "
            f"(accepted sizes: {accepted})",
            param="size",
        )
    size = f"{int(parts[0])}x{int(parts[1])}"
    if size not in card.sizes:
        raise InvalidRequest(
            f"size {value} is not available: model {card.name} makes {accepted} "
            f"(accepted sizes: {accepted})",
            param="size",
            code="unsupported_size",
        )
    return size


def _check_file_type(name: str, upload: UploadFile) -> str:
    """The extension to store the upload under; 415 for types we do not read."""
    filename = upload.filename or ""
    ext = Path(filename).suffix.lower()
    content_type = (upload.content_type or "").split(";")[0].strip().lower()
    if not ext and content_type:
        ext = mimetypes.guess_extension(content_type) or ""
    major = content_type.split("/")[0]
    declared_media = major in ("image", "video", "audio")
    generic = content_type in ("", "application/octet-stream")
    if (ext and ext not in ALL_EXTENSIONS) or not (declared_media or generic):
        accepted = "; ".join(f"{k}: {' '.join(v)}" for k, v in EXTENSIONS.items())
        raise UnsupportedMediaType(
            f"{name}: unsupported file type ({filename or 'unnamed'}, "
            f"{content_type or 'no content type'}); accepted: {accepted}",
            param=name,
        )
    return ext if ext in ALL_EXTENSIONS else ".bin"


def check_idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not 0 < len(value) <= MAX_IDEMPOTENCY_KEY_CHARS or not value.isprintable():
        raise InvalidRequest(
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable characters "
            "(a UUID is usual)",
            param="Idempotency-Key",
        )
    return value


def check_webhook_url(url: str | None, settings: Settings) -> None:
    """A create's `webhook_url`: webhooks on here, and the URL resolves to public addresses
    (or VIDEOPOET_WEBHOOK_ALLOW_PRIVATE); 422 otherwise. Delivery checks it again."""
    if url is None:
        return
    if settings.webhook_secret is None:
        raise InvalidRequest(
            "webhook_url: this server sends no webhooks (VIDEOPOET_WEBHOOK_SECRET is not set)",
            param="webhook_url",
            code="webhooks_disabled",
        )
    try:
        resolve(url, allow_private=settings.webhook_allow_private)
    except WebhookError as exc:
        raise InvalidRequest(
            f"webhook_url: {exc}", param="webhook_url", code="invalid_webhook_url"
        ) from None


def fingerprint(request: CreateRequest, **context: Any) -> str:
    """SHA-256 of what a create asked for: its fields, its files' bytes, and `context` (the
    endpoint's defaults), so a retry with the same body matches and any other does not."""
    digest = hashlib.sha256()
    # Fields left at their defaults are left out (None, and preview false), so a request
    # that does not ask for previews fingerprints as it did before the field existed.
    fields = request.fields.model_dump(mode="json", exclude_defaults=True)
    digest.update(json.dumps({"fields": fields, **context}, sort_keys=True).encode())
    for name in sorted(request.uploads):
        upload = request.uploads[name]
        digest.update(f"\0{name}\0".encode())
        upload.file.seek(0)
        while chunk := upload.file.read(1024 * 1024):
            digest.update(chunk)
        upload.file.seek(0)
    return digest.hexdigest()


class Intake:
    """Turns create requests into records and jobs for one served model."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        queue: JobQueue,
        card: ModelCard,
        limits: Limits | None = None,
    ):
        self.settings = settings
        self.store = store
        self.queue = queue
        self.card = card
        self.limits = limits or Limits(store.redis)

    # --- inputs ------------------------------------------------------------------------
    def _probe(self, name: str, path: Path) -> MediaInfo:
        s = self.settings
        try:
            info = probe(path, timeout=s.ffmpeg_timeout_seconds, max_pixels=s.max_input_side**2)
        except MediaError as exc:
            raise InvalidRequest(f"{name}: {exc}", param=name, code="invalid_file") from exc
        if (
            info.kind in ("video", "audio")
            and info.duration is not None
            and info.duration > s.max_input_seconds
        ):
            raise InvalidRequest(
                f"{name}: {info.duration:g} s is too long; inputs may be at most "
                f"{s.max_input_seconds:g} s (VIDEOPOET_MAX_INPUT_SECONDS)",
                param=name,
            )
        if info.width and info.height and max(info.width, info.height) > s.max_input_side:
            raise InvalidRequest(
                f"{name}: {info.width}x{info.height} is too large; images and videos may be at "
                f"most {s.max_input_side} pixels on a side (VIDEOPOET_MAX_INPUT_SIDE)",
                param=name,
            )
        if info.kind == "video" and info.fps:
            if info.fps > s.max_input_fps:
                raise InvalidRequest(
                    f"{name}: {info.fps:g} frames per second is too many; videos may have at "
                    f"most {s.max_input_fps:g} (VIDEOPOET_MAX_INPUT_FPS)",
                    param=name,
                )
            frames = (info.duration or 0.0) * info.fps
            if frames > s.max_input_frames:
                raise InvalidRequest(
                    f"{name}: about {frames:.0f} frames is too many; videos may have at most "
                    f"{s.max_input_frames} (VIDEOPOET_MAX_INPUT_FRAMES)",
                    param=name,
                )
        return info

    def _save_upload(self, name: str, upload: UploadFile, folder: Path) -> Path:
        ext = _check_file_type(name, upload)
        path = folder / f"input_{name}{ext}"
        upload.file.seek(0)
        written = 0
        with path.open("wb") as out:
            while chunk := upload.file.read(1024 * 1024):
                written += len(chunk)
                if written > self.settings.max_upload_bytes:
                    raise PayloadTooLarge(
                        f"{name} is larger than {self.settings.max_upload_bytes} bytes "
                        "(VIDEOPOET_MAX_UPLOAD_BYTES)",
                        param=name,
                    )
                out.write(chunk)
        return path

    def _save_reference(
        self, name: str, ref: Reference, folder: Path, owner: str | None = None
    ) -> Path:
        if ref.id is not None:
            source = self.store.get(ref.id)
            if source is None or (owner is not None and source.owner != owner):
                raise NotFound(f"{name}: no video with id {ref.id!r}", param=name)
            if source.status is not VideoStatus.completed:
                raise Conflict(
                    f"{name}: video {ref.id} is {source.status.value}; only a completed video "
                    "can be used as an input",
                    param=name,
                )
            variant = "image" if name == "image" and "image" in source.outputs else "video"
            stored = source.outputs[variant]
            path = folder / f"input_{name}{Path(stored).suffix}"
            try:
                return self.store.artifacts.fetch(ref.id, stored, path)
            except ArtifactMissing:
                raise NotFound(
                    f"{name}: the {variant} of video {ref.id} is no longer stored", param=name
                ) from None
        if ref.character_id is not None:
            return self._save_character(name, ref.character_id, folder, owner)
        url = ref.image_url or ref.url
        if url is not None:
            if not url.startswith("data:") or ";base64," not in url:
                raise InvalidRequest(
                    f"{name}: only base64 data URLs (data:image/png;base64,...) are read; "
                    "upload the file instead",
                    param=name,
                )
            header, payload = url[5:].split(";base64,", 1)
            try:
                raw = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise InvalidRequest(
                    f"{name}: the data URL is not valid base64", param=name
                ) from exc
            if len(raw) > self.settings.max_upload_bytes:
                raise PayloadTooLarge(
                    f"{name} is {len(raw)} bytes; at most {self.settings.max_upload_bytes}",
                    param=name,
                )
            ext = mimetypes.guess_extension(header.strip().lower()) or ".bin"
            path = folder / f"input_{name}{ext}"
            path.write_bytes(raw)
            return path
        raise InvalidRequest(
            f'{name}: give a file upload, {{"id": "video_..."}} of a completed video, '
            '{"character_id": "char_..."}, or {"image_url": "data:...;base64,..."} (file ids '
            "are not supported)",
            param=name,
        )

    def _save_character(
        self, name: str, character_id: str, folder: Path, owner: str | None
    ) -> Path:
        """A character's reference, copied into the new video's folder (core/characters.py)."""
        character = Characters(self.store).get(character_id)
        if character is None or (owner is not None and character.owner != owner):
            raise NotFound(f"{name}: no character with id {character_id!r}", param=name)
        path = folder / f"input_{name}{Path(character.file).suffix}"
        try:
            return self.store.artifacts.fetch(character_id, character.file, path)
        except ArtifactMissing:
            raise NotFound(
                f"{name}: the reference of character {character_id} is no longer stored",
                param=name,
            ) from None

    @staticmethod
    def _check_characters(task: Task, inputs: dict[str, StoredInput]) -> None:
        """A character conditions a task that takes its kind of input; else a 422 naming
        the tasks that do."""
        for kind, stored in inputs.items():
            wanted = INPUT_NAMES[kind]
            required, optional = TASK_INPUTS[task]
            if stored.character is None or wanted in required | optional:
                continue
            takes = sorted(t.value for t, (req, opt) in TASK_INPUTS.items() if wanted in req | opt)
            article = "an" if kind == "image" else "a"
            raise InvalidRequest(
                f"character {stored.character} gives {article} {kind} input, which task "
                f"{task.value} does not take; tasks that take {article} {kind}: {', '.join(takes)}",
                param="task",
            )

    def _gather_inputs(
        self, request: CreateRequest, folder: Path, owner: str | None = None
    ) -> dict[str, StoredInput]:
        """Save and probe every input; return them by the slot they fill."""
        stored: dict[str, StoredInput] = {}
        for name in FILE_FIELDS:
            upload = request.uploads.get(name)
            ref = getattr(request.fields, name)
            if upload is None and ref is None:
                continue
            path = (
                self._save_upload(name, upload, folder)
                if upload is not None
                else self._save_reference(name, ref, folder, owner)
            )
            info = self._probe(name, path)
            kind = self._slot(name, info)
            if kind in stored:
                raise InvalidRequest(
                    f"{name}: a {kind} input was already given; give one {kind}", param=name
                )
            stored[kind] = StoredInput(
                kind=kind,
                name=path.name,
                info=info,
                character=ref.character_id if upload is None else None,
            )
        return stored

    @staticmethod
    def _slot(name: str, info: MediaInfo) -> str:
        """Which input a file fills: input_reference follows its content, the others their name."""
        kind = info.kind
        if name == "input_reference":
            assert kind is not None
            return kind
        if name == "audio" and info.has_audio:
            return "audio"
        if name == "video" and kind == "video":
            return "video"
        if name == "image" and kind in ("image", "video"):
            return "image"  # a video's first frame serves as an image
        raise InvalidRequest(
            f"{name}: expected {'an' if name in ('image', 'audio') else 'a'} {name} file; "
            f"got {kind or 'no media'} ({info.format})",
            param=name,
            code="invalid_file",
        )

    # --- the spec ----------------------------------------------------------------------
    @staticmethod
    def _resolve_task(
        fields: VideoCreate,
        inputs: dict[str, StoredInput],
        default: Task | None,
        allowed: frozenset[Task] | None,
    ) -> Task:
        task = fields.task or default
        if task is None:
            if "video" in inputs:
                choices = sorted(
                    t.value for t, (req, _) in TASK_INPUTS.items() if Input.video in req
                )
                raise InvalidRequest(
                    f"task is required with a video input: one of {', '.join(choices)}",
                    param="task",
                )
            if "image" in inputs:
                task = Task.image_to_video
            elif "audio" in inputs:
                task = Task.audio_to_video
            else:
                task = Task.text_to_video
        if allowed is not None and task not in allowed:
            raise InvalidRequest(
                f"task {task.value} is not available here; accepted: "
                f"{', '.join(sorted(t.value for t in allowed))}",
                param="task",
            )
        return task

    def _build_spec(
        self, fields: VideoCreate, task: Task, inputs: dict[str, StoredInput], size: str
    ) -> tuple[TaskSpec, int]:
        seconds = parse_seconds(fields.seconds)
        values: dict[str, Any] = {
            "task": task,
            "size": size,
            "prompt": fields.prompt,
            "seconds": seconds,
            "seed": fields.seed if fields.seed is not None else random_seed(),
            "with_audio": bool(fields.with_audio),
            "mask_box": fields.mask_box,
        }
        # a request that names no guidance gets the model's own (its card says which)
        values["guidance_scale"] = self.card.guidance_scale
        for name in ("guidance_scale", "temperature", "top_k", "top_p"):
            if getattr(fields, name) is not None:
                values[name] = getattr(fields, name)
        for kind, stored in inputs.items():
            values[kind] = stored.name
        try:
            spec = TaskSpec.model_validate(values)
            spec.check_inputs({INPUT_NAMES[k] for k in inputs})
            frames = output_frames(spec, self.card)
        except ValidationError as exc:
            message, param = describe_validation_error(exc)
            raise InvalidRequest(message, param=param) from exc
        except TaskSpecError as exc:
            raise InvalidRequest(str(exc)) from exc
        if spec.with_audio and task in IMAGE_TASKS:
            raise InvalidRequest(
                f"with_audio is for video tasks; {task.value} makes a still image",
                param="with_audio",
            )
        if spec.mask_box is not None and "video" in inputs:
            info = inputs["video"].info
            x0, y0, x1, y1 = spec.mask_box
            if info.width and info.height and (x1 > info.width or y1 > info.height):
                raise InvalidRequest(
                    f"mask_box {x0},{y0},{x1},{y1} reaches outside the input video "
                    f"({info.width}x{info.height}): x1 <= {info.width}, y1 <= {info.height}",
                    param="mask_box",
                )
        return spec, frames

    def _output_seconds(self, spec: TaskSpec, frames: int, inputs: dict[str, StoredInput]) -> str:
        if spec.task in IMAGE_TASKS:
            return format_seconds(STILL_VIDEO_SECONDS)
        if spec.task in AUDIO_TASKS and "video" in inputs and inputs["video"].info.duration:
            return format_seconds(inputs["video"].info.duration)
        return format_seconds(frames / self.card.fps)

    # --- create ------------------------------------------------------------------------
    def create(
        self,
        request: CreateRequest,
        *,
        default_task: Task | None = None,
        allowed_tasks: frozenset[Task] | None = None,
        remixed_from: str | None = None,
        idempotency_key: str | None = None,
        owner: str | None = None,
        identity: str = "anonymous",
    ) -> VideoRecord:
        """Validate, store the inputs, write the record and enqueue its job.

        `owner`: the caller's key (None on an open API); `identity`: what the caller's
        active-video cap counts against. A repeated Idempotency-Key with the same request
        returns the first video; with another request it is a 409.
        """
        video_id = new_video_id()
        claim_key = fingerprint_value = None
        if idempotency_key:
            claim_key = self.store.idempotency_claim_key(owner, idempotency_key)
            fingerprint_value = fingerprint(
                request,
                default_task=default_task.value if default_task else None,
                allowed_tasks=sorted(t.value for t in allowed_tasks or ()),
                remixed_from=remixed_from,
            )
            try:
                earlier = self.store.claim_idempotency(claim_key, video_id, fingerprint_value)
            except IdempotencyConflict as exc:
                raise Conflict(
                    str(exc), param="Idempotency-Key", code="idempotency_conflict"
                ) from None
            if earlier is not None:
                return earlier
        try:
            record = self._make(
                request,
                video_id,
                default_task=default_task,
                allowed_tasks=allowed_tasks,
                remixed_from=remixed_from,
                owner=owner,
                identity=identity,
                claim_key=claim_key,
            )
        except BaseException:
            if claim_key and fingerprint_value:
                self.store.release_idempotency(claim_key, video_id, fingerprint_value)
            raise
        if claim_key and fingerprint_value:
            self.store.complete_idempotency(claim_key, video_id, fingerprint_value)
        return record

    def _make(
        self,
        request: CreateRequest,
        video_id: str,
        *,
        default_task: Task | None,
        allowed_tasks: frozenset[Task] | None,
        remixed_from: str | None,
        owner: str | None,
        identity: str,
        claim_key: str | None,
    ) -> VideoRecord:
        fields = request.fields
        if fields.model is not None and fields.model != self.card.name:
            raise InvalidRequest(
                f"model {fields.model!r} is not served here; this server runs {self.card.name!r}",
                param="model",
                code="model_not_found",
            )
        size = check_size(fields.size, self.card)
        parse_seconds(fields.seconds)  # a malformed value fails before any upload is read
        check_webhook_url(fields.webhook_url, self.settings)
        self.limits.reserve_slot(identity, video_id, self.settings.max_active_jobs_per_key)

        artifacts = self.store.artifacts
        scratch = contextlib.ExitStack()  # where inputs are probed (S3: a temporary folder)
        try:
            folder = scratch.enter_context(artifacts.scratch(video_id))
            inputs = self._gather_inputs(request, folder, owner)
            task = self._resolve_task(fields, inputs, default_task, allowed_tasks)
            self._check_characters(task, inputs)
            video = inputs.get("video")
            if (
                Input.audio in TASK_INPUTS[task][0]
                and "audio" not in inputs
                and video is not None
                and video.info.has_audio
            ):
                # av_continuation of an mp4 with sound: its own track is the audio input.
                inputs["audio"] = StoredInput(kind="audio", name=video.name, info=video.info)
            spec, frames = self._build_spec(fields, task, inputs, size)
            # every check passed: store the inputs (S3: uploaded from the local folder)
            artifacts.publish(video_id, folder, {s.name for s in inputs.values()})
            record = VideoRecord(
                id=video_id,
                model=self.card.name,
                created_at=int(time.time()),
                seconds=self._output_seconds(spec, frames, inputs),
                size=size,
                prompt=spec.prompt,
                task=spec.task,
                spec=spec,
                remixed_from_video_id=remixed_from,
                inputs={kind: stored.name for kind, stored in inputs.items()},
                input_seconds=video.info.duration if video is not None else None,
                owner=owner,
                idempotency_claim=claim_key,
                priority=fields.priority or DEFAULT_PRIORITY,
                webhook_url=fields.webhook_url,
                preview=fields.preview,
            )
            self.store.create(record)
        except BaseException:
            with contextlib.suppress(ArtifactError):
                artifacts.delete(video_id)
            self.limits.release_slot(identity, video_id)
            raise
        finally:
            scratch.close()
        try:
            self.queue.enqueue(
                video_id,
                timeout=self.settings.job_timeout_seconds,
                retries=self.settings.max_retries,
                keep_seconds=self.settings.retention_seconds,
                priority=record.priority,
            )
        except BaseException:
            self.store.delete(video_id)
            self.limits.release_slot(identity, video_id)
            raise
        logger.info(
            "queued %s (%s, %s priority) on %s",
            video_id,
            spec.task.value,
            record.priority,
            self.queue.name,
        )
        return record
