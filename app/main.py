"""The FastAPI application: `create_app()` builds it (uvicorn: ``app.main:create_app --factory``).

It never imports torch: requests are validated against the model card and handed to the
workers through Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from core.artifacts import ArtifactError
from core.config import Settings, get_settings
from core.redact import redact_url
from app.errors import install_error_handlers
from app.intake import max_body_bytes
from app.limits import BodyLimit
from app.routes import characters, health, playground, videos
from app.schemas import VideoCreate
from app.state import AppState

logger = logging.getLogger(__name__)


async def _sweep_expired(state: AppState) -> None:
    """Delete expired videos every cleanup interval (one API process at a time)."""
    interval = state.settings.cleanup_interval_seconds
    while True:
        try:
            deleted = await run_in_threadpool(state.store.sweep, max(1, int(interval) - 1))
            if deleted:
                logger.info("expired %d videos", len(deleted))
        except RedisError as exc:
            logger.warning("expiry sweep skipped: %s", exc)
        await asyncio.sleep(interval)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, plus the create body's schemas (the creating endpoints read JSON or
    multipart themselves, so no signature declares them)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            routes=app.routes,
        )
        create = VideoCreate.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(create.pop("$defs", {}))
        components["VideoCreate"] = create
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    state = AppState.build(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await run_in_threadpool(state.store.artifacts.check)  # the folder store: makes it
        except ArtifactError as exc:  # /readyz says so until it is fixed
            logger.warning("the artifact store is not ready: %s", exc)
        sweeper = asyncio.create_task(_sweep_expired(state))
        logger.info(
            "serving model %s (%s) on queue %s, Redis %s, artifacts in %s",
            state.card.name,
            ", ".join(state.card.sizes),
            state.queue.name,
            redact_url(settings.redis),
            state.store.artifacts.describe(),
        )
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            state.close()

    app = FastAPI(
        title="videopoet-server",
        summary="VideoPoet behind the OpenAI Videos API.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.videopoet = state
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes(settings))
    install_error_handlers(app)
    app.include_router(characters.router)  # before videos: /videos/characters is no video id
    app.include_router(videos.router)
    app.include_router(health.router)
    app.include_router(playground.router)
    return app
