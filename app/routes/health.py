"""Liveness apart from readiness, and the Prometheus endpoint."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from redis.exceptions import RedisError

from app import metrics
from app.state import AppState, get_state
from core.artifacts import ArtifactError
from core.redact import redact_text, redact_url

router = APIRouter(tags=["health"])
StateDep = Annotated[AppState, Depends(get_state)]


class Health(str, Enum):
    alive = "alive"  # the process answers
    ready = "ready"  # Redis and the artifact store answer and a worker serves this model
    unavailable = "unavailable"  # alive, but jobs would not run: see `reason`


class HealthReport(BaseModel):
    status: Health
    model: str | None = None
    workers: int | None = None
    queue_depth: int | None = None
    reason: str | None = None


@router.get("/healthz", response_model=HealthReport)
def healthz() -> HealthReport:
    """Liveness: the API process answers."""
    return HealthReport(status=Health.alive)


@router.get("/readyz", response_model=HealthReport, responses={503: {"model": HealthReport}})
def readyz(state: StateDep) -> HealthReport | JSONResponse:
    """Readiness: Redis reachable, the artifact store usable (bucket reachable, credentials
    accepted) and at least one live worker for the served model."""
    model = state.card.name
    try:
        state.redis.ping()
        workers = state.queue.live_workers()
        depth = state.queue.depth()
    except RedisError as exc:
        where = redact_url(state.settings.redis)
        return _unavailable(model, f"Redis at {where} is unreachable: {redact_text(str(exc))}")
    try:
        state.store.artifacts.check()
    except ArtifactError as exc:  # its message names the store and the cause, no secret
        return _unavailable(
            model, f"the artifact store is not usable: {exc}", workers=workers, queue_depth=depth
        )
    if workers == 0:
        others = [q for q in state.queue.live_workers_elsewhere() if q != state.queue.name]
        reason = f"no live worker serves model {model!r}"
        if others:
            reason += f" (workers are live on {', '.join(others)})"
        return _unavailable(model, reason, workers=0, queue_depth=depth)
    return HealthReport(status=Health.ready, model=model, workers=workers, queue_depth=depth)


def _unavailable(model: str, reason: str, **extra: int) -> JSONResponse:
    report = HealthReport(status=Health.unavailable, model=model, reason=reason, **extra)
    return JSONResponse(report.model_dump(mode="json"), status_code=503)


@router.get("/metrics", response_class=Response)
def prometheus_metrics(state: StateDep) -> Response:
    """Prometheus text exposition (all API processes, plus workers sharing the folder)."""
    return Response(metrics.render(state.queue), media_type=CONTENT_TYPE_LATEST)
