"""What every request handler shares: settings, the model card, store, queue, intake."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from redis import Redis

from app.config import Settings
from app.intake import Intake
from app.queue import JobQueue
from app.store import Store
from models.card import ModelCard, load_card


@dataclass
class AppState:
    settings: Settings
    card: ModelCard
    redis: Redis  # decode_responses=True: records
    store: Store
    queue: JobQueue
    intake: Intake

    @classmethod
    def build(cls, settings: Settings) -> AppState:
        card = load_card(settings.model)
        redis = Redis.from_url(settings.redis, decode_responses=True)
        store = Store(redis, settings.artifacts, retention_seconds=settings.retention_seconds)
        queue = JobQueue(Redis.from_url(settings.redis), card.name)
        return cls(
            settings=settings,
            card=card,
            redis=redis,
            store=store,
            queue=queue,
            intake=Intake(settings, store, queue, card),
        )

    def close(self) -> None:
        self.redis.close()
        self.queue.connection.close()


def get_state(request: Request) -> AppState:
    return request.app.state.videopoet
