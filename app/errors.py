"""Domain errors and their one mapping to HTTP, in OpenAI's error shape:
``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.artifacts import ArtifactError

logger = logging.getLogger(__name__)

# Retry-After on a 503 while Redis is unreachable (a restart takes seconds).
REDIS_RETRY_AFTER_SECONDS = 5


class APIError(Exception):
    """An error the caller can act on. The message says what was wrong and what is accepted."""

    status_code = 400
    error_type = "invalid_request_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.param, self.code)


class InvalidRequest(APIError):
    """A value that cannot be accepted (422)."""

    status_code = 422
    default_code = "invalid_value"


class Unauthorized(APIError):
    """No API key, or one that is not configured (401)."""

    status_code = 401
    default_code = "invalid_api_key"

    def __init__(self, message: str):
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class NotFound(APIError):
    status_code = 404
    default_code = "not_found"


class Conflict(APIError):
    """The video is not in a state that allows this (e.g. content of a queued video)."""

    status_code = 409
    default_code = "invalid_state"


class PayloadTooLarge(APIError):
    status_code = 413
    default_code = "file_too_large"


class UnsupportedMediaType(APIError):
    status_code = 415
    default_code = "unsupported_file_type"


class RateLimited(APIError):
    """Too many requests, or too many videos at once, for one API key (429, Retry-After)."""

    status_code = 429
    error_type = "requests"  # OpenAI's type for request-rate limits
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float, code: str | None = None):
        super().__init__(
            message, code=code, headers={"Retry-After": retry_after_header(retry_after)}
        )


class ServiceUnavailable(APIError):
    status_code = 503
    error_type = "server_error"
    default_code = "unavailable"


def retry_after_header(seconds: float) -> str:
    """Retry-After in whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


def error_body(
    message: str, error_type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def _format_validation(exc: RequestValidationError) -> tuple[str, str | None]:
    parts = []
    param = None
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        where = ".".join(loc)
        param = param or where or None
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return "; ".join(parts) or "invalid request", param


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves the API in OpenAI's shape."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _format_validation(exc)
        return JSONResponse(
            error_body(message, "invalid_request_error", param, "invalid_value"), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            error_body(str(exc.detail), "invalid_request_error", None, None),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RedisError)
    async def _redis_down(request: Request, exc: RedisError) -> JSONResponse:
        logger.error("Redis error on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            error_body(
                "the service's Redis is unreachable; try again shortly",
                "server_error",
                None,
                "unavailable",
            ),
            status_code=503,
            headers={"Retry-After": retry_after_header(REDIS_RETRY_AFTER_SECONDS)},
        )

    @app.exception_handler(ArtifactError)
    async def _storage_down(request: Request, exc: ArtifactError) -> JSONResponse:
        # The message names the store and the cause, never a credential (core/artifacts.py).
        logger.error("artifact store error on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            error_body(
                f"the service's artifact storage failed; try again shortly ({exc})",
                "server_error",
                None,
                "storage_unavailable",
            ),
            status_code=503,
            headers={"Retry-After": retry_after_header(REDIS_RETRY_AFTER_SECONDS)},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body("internal server error", "server_error", None, "internal_error"),
            status_code=500,
        )
