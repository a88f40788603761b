"""Characters: reusable references (an image or a short video of someone or something) that a
create can name as its input (`{"character_id": "char_..."}`) instead of uploading it again.

A character's record is one Redis string of JSON, `videopoet:character:<id>`, owned like a
video by the API key that made it; its file lives in the artifact store under its own id
(`<id>/reference.<ext>`), beside the videos. Characters do not expire: they stay until
deleted. A video made from one holds its own copy of the file, so deleting the character
never breaks a queued job.
"""

from __future__ import annotations

import re
import uuid
from typing import Literal

from pydantic import BaseModel

from core.store import KEY_PREFIX, Store

CHARACTER_KEY = KEY_PREFIX + ":character:{}"  # string: one character's record, as JSON
CHARACTER_ID_RE = re.compile(r"char_[0-9a-f]{32}")
# Longest display name accepted.
MAX_NAME_CHARS = 200


def new_character_id() -> str:
    return "char_" + uuid.uuid4().hex


class CharacterRecord(BaseModel):
    id: str
    name: str
    created_at: int
    # "image" or "video": what the reference is, as probed when it was made.
    kind: Literal["image", "video"]
    file: str  # its name in the artifact store, under the character's id
    width: int | None = None
    height: int | None = None
    seconds: float | None = None  # a video's duration
    owner: str | None = None  # the API key's owner id (core/keys.py); None on an open API


class Characters:
    """Character records in the store's Redis, their files in its artifact store."""

    def __init__(self, store: Store):
        self.redis = store.redis
        self.artifacts = store.artifacts

    def create(self, record: CharacterRecord) -> None:
        self.redis.set(CHARACTER_KEY.format(record.id), record.model_dump_json())

    def get(self, character_id: str) -> CharacterRecord | None:
        if not CHARACTER_ID_RE.fullmatch(character_id):
            return None
        raw = self.redis.get(CHARACTER_KEY.format(character_id))
        return CharacterRecord.model_validate_json(raw) if raw else None

    def delete(self, character_id: str) -> bool:
        """Remove the file, then the record (ArtifactError: the record stays)."""
        if not CHARACTER_ID_RE.fullmatch(character_id):
            return False
        self.artifacts.delete(character_id)
        return bool(self.redis.delete(CHARACTER_KEY.format(character_id)))
