"""What the API takes and returns, in the OpenAI Videos API shape plus VideoPoet's fields."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from core.characters import CharacterRecord
from core.video import Video
from models.spec import MAX_PROMPT_CHARS, MAX_SEED, Task


class Reference(BaseModel):
    """An input given by reference instead of upload: a finished video of this service
    (``{"id": "video_..."}``), a character (``{"character_id": "char_..."}``, its image or
    video) or a base64 data URL (``{"image_url": "data:image/png;base64,..."}``)."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    character_id: str | None = None
    image_url: str | None = None
    url: str | None = None
    file_id: str | None = None


class VideoCreate(BaseModel):
    """The fields of POST /v1/videos (also /edits, /extensions and /{id}/remix), from JSON or
    multipart. Uploads arrive beside it as files under the same names
    (`input_reference`, `image`, `video`, `audio`)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    model: str | None = None
    # OpenAI sends a string ("4"); a JSON number is fine too.
    seconds: str | float | None = None
    size: str | None = None
    # VideoPoet extras (the openai SDK sends them through `extra_body`).
    task: Task | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    guidance_scale: float | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    with_audio: bool | None = None
    # Ours: while it is made, a preview.mp4 of the frames decoded so far (content
    # variant=preview) and a `preview` event on /events at each new one.
    preview: bool = Field(
        default=False,
        description="true: publish previews of the frames made so far while the video is made "
        "(content variant=preview, `preview` events on /events)",
    )
    mask_box: tuple[int, int, int, int] | None = None
    # Which of the model's queues it waits on: a worker takes high before normal before low.
    priority: Literal["high", "normal", "low"] | None = None
    # Where this video's finish event goes (besides VIDEOPOET_WEBHOOK_URLS): a public
    # http(s) URL; never shown in the video object.
    webhook_url: str | None = Field(default=None, max_length=2048)
    input_reference: Reference | None = None
    image: Reference | None = None
    video: Reference | None = None
    audio: Reference | None = None

    @field_validator("mask_box", mode="before")
    @classmethod
    def _parse_box(cls, value: Any) -> Any:
        # "x0,y0,x1,y1" from a form or the CLI; a list from JSON or the SDK's `mask_box[]`.
        if isinstance(value, str):
            return [v.strip() for v in value.split(",")]
        return value

    @field_validator("preview", mode="before")
    @classmethod
    def _parse_preview(cls, value: Any) -> Any:
        # JSON sends a boolean, a form the text "true" or "false" (the openai SDK's multipart
        # spelling); null or an empty field is no choice. Nothing else is guessed at: "yes",
        # "on" or 1 is refused, where pydantic's lax bool would take them.
        if value is None or (isinstance(value, str) and not value.strip()):
            return False
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if not isinstance(value, bool):
            raise PydanticCustomError("bool_type", "must be true or false")
        return value

    @field_validator("input_reference", "image", "video", "audio", mode="before")
    @classmethod
    def _parse_reference(cls, value: Any) -> Any:
        # A bare id string is a reference to a finished video (or, "char_...", a character);
        # an empty one is no input.
        if isinstance(value, str):
            if value.strip().startswith("char_"):
                return {"character_id": value.strip()}
            return {"id": value} if value.strip() else None
        return value


class VideoList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Video]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class VideoDeleted(BaseModel):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool = True


class Character(BaseModel):
    """A character (POST /v1/videos/characters): the SDK's `id`, `created_at` and `name`, then
    what the reference is."""

    id: str
    object: Literal["video.character"] = "video.character"
    created_at: int
    name: str
    kind: Literal["image", "video"]  # what a create gets from it: an image or a video input
    width: int | None = None
    height: int | None = None
    seconds: float | None = None

    @classmethod
    def from_record(cls, record: CharacterRecord) -> Character:
        return cls.model_validate(record.model_dump(exclude={"file", "owner"}))


class CharacterDeleted(BaseModel):
    id: str
    object: Literal["video.character.deleted"] = "video.character.deleted"
    deleted: bool = True


def describe_validation_error(exc: ValidationError) -> tuple[str, str | None]:
    """One line per problem: `field: what is wrong (got X)`; and the first field named."""
    parts = []
    param = None
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        param = param or (str(err["loc"][0]) if err.get("loc") else None)
        if err.get("type") == "extra_forbidden":
            parts.append(f"unknown field {loc!r}")
            continue
        got = err.get("input")
        shown = f" (got {got!r})" if isinstance(got, (str, int, float, bool)) else ""
        parts.append(f"{loc}: {err.get('msg')}{shown}" if loc else f"{err.get('msg')}{shown}")
    return "; ".join(parts), param


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx body, in OpenAI's shape."""

    error: ErrorDetail


# Fields of a create that may carry a file in multipart (the others are plain form fields).
FILE_FIELD_NAMES = ("input_reference", "image", "video", "audio")


def create_body_openapi() -> dict[str, Any]:
    """The request body of the creating endpoints for the OpenAPI document: they read JSON or
    multipart themselves (FastAPI cannot declare "one of the two" from a signature)."""
    form: dict[str, Any] = {}
    for name, info in VideoCreate.model_fields.items():
        if name in FILE_FIELD_NAMES:
            form[name] = {"type": "string", "format": "binary"}
        elif name == "task":
            form[name] = {"type": "string", "enum": [t.value for t in Task]}
        elif name == "priority":
            form[name] = {"type": "string", "enum": ["high", "normal", "low"]}
        elif name == "preview":
            form[name] = {"type": "string", "enum": ["true", "false"], "default": "false"}
        elif name == "mask_box":
            form[name] = {"type": "string", "description": "x0,y0,x1,y1"}
        else:
            form[name] = {"type": "string"}
        if info.description:
            form[name]["description"] = info.description
    return {
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/VideoCreate"}},
                "multipart/form-data": {"schema": {"type": "object", "properties": form}},
            },
        }
    }
