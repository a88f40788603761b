"""What every request handler shares: settings, the model card, store, queue, intake, limits
and the API keys."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from redis import Redis

from core.artifacts import open_artifacts
from core.config import Settings
from app.intake import Intake
from core.keys import parse_api_keys
from app.limits import Limits
from core.queue import JobQueue
from core.store import Store
from core.webhooks import WebhookQueue
from models.card import ModelCard, load_card


@dataclass
class AppState:
    settings: Settings
    card: ModelCard
    redis: Redis  # decode_responses=True: records
    store: Store
    queue: JobQueue
    intake: Intake
    limits: Limits
    api_keys: dict[str, str]  # sha256 hex of each key -> owner id; empty: the API is open

    @classmethod
    def build(cls, settings: Settings) -> AppState:
        card = load_card(settings.model)
        redis = Redis.from_url(settings.redis, decode_responses=True)
        store = Store(redis, open_artifacts(settings), retention_seconds=settings.retention_seconds)
        queue = JobQueue(Redis.from_url(settings.redis), card.name)
        limits = Limits(redis)
        # every video this API finishes (cancels) gets its webhook event queued
        store.on_finish = WebhookQueue.from_settings(queue.connection, settings).video_finished
        return cls(
            settings=settings,
            card=card,
            redis=redis,
            store=store,
            queue=queue,
            intake=Intake(settings, store, queue, card, limits),
            limits=limits,
            api_keys=parse_api_keys(settings.api_keys),
        )

    def close(self) -> None:
        self.redis.close()
        self.queue.connection.close()


def get_state(request: Request) -> AppState:
    return request.app.state.videopoet
