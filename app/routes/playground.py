"""The web playground at `/`: plain HTML, JS and CSS from app/static (no build step, nothing
loaded from another origin), plus the one JSON it reads besides the Videos API: what the
served model makes and which inputs each task takes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from app.errors import NotFound
from app.state import AppState, get_state
from models.spec import EXTENDABLE_TASKS, IMAGE_TASKS, TASK_INPUTS

router = APIRouter(include_in_schema=False)
StateDep = Annotated[AppState, Depends(get_state)]

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
# The page may load and call this server only (media as blob: URLs, fetched with the API key);
# the browser enforces it, so nothing external can slip in.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' blob: data:; media-src 'self' blob:; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# The files the playground is made of, and their media types (nothing else is served).
STATIC_FILES = {
    "playground.js": "text/javascript; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
}


@router.get("/", response_class=FileResponse)
def playground() -> FileResponse:
    """The playground page."""
    return FileResponse(
        STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=PAGE_HEADERS
    )


@router.get("/playground/config.json")
def playground_config(state: StateDep) -> dict[str, Any]:
    """The served model's card and, per task, the inputs it needs and may use."""
    card = state.card
    tasks = [
        {
            "name": task.value,
            "required": sorted(i.value for i in required),
            "optional": sorted(i.value for i in optional),
            "image_output": task in IMAGE_TASKS,
            "extendable": task in EXTENDABLE_TASKS,
        }
        for task, (required, optional) in TASK_INPUTS.items()
    ]
    return {
        "model": card.name,
        "size": card.default_size,
        "sizes": card.sizes,
        "fps": card.fps,
        "clip_seconds": card.clip_seconds,
        "max_seconds": card.max_seconds,
        "guidance_scale": card.guidance_scale,
        "max_upload_bytes": state.settings.max_upload_bytes,
        "tasks": tasks,
    }


@router.get("/playground/{name}", response_class=FileResponse)
def playground_file(name: str) -> FileResponse:
    """The playground's script and stylesheet."""
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        raise NotFound(f"no playground file {name!r}", param="name")
    return FileResponse(
        STATIC_DIR / name, media_type=media_type, headers={"X-Content-Type-Options": "nosniff"}
    )
