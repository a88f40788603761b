"""The store on a real Redis: guarded status changes, cursor pages, deletion and expiry."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from redis import Redis

from core.store import Store, VideoRecord, VideoStatus, new_video_id
from models.spec import Task, TaskSpec

ACTIVE = frozenset({VideoStatus.queued, VideoStatus.in_progress})


def _record(**fields) -> VideoRecord:
    spec = TaskSpec(task=Task.text_to_video, prompt="a ball", seed=1)
    values = dict(
        id=new_video_id(),
        model="tiny",
        created_at=int(time.time()),
        seconds="2.125",
        size="32x32",
        prompt="a ball",
        task=spec.task,
        spec=spec,
    )
    return VideoRecord(**{**values, **fields})


@pytest.fixture
def store(redis: Redis, tmp_path: Path) -> Store:
    return Store(redis, tmp_path / "artifacts", retention_seconds=60)


def test_a_record_round_trips(store: Store) -> None:
    record = _record(inputs={"video": "input_video.mp4"})
    store.create(record)
    assert store.get(record.id) == record
    assert store.status(record.id) is VideoStatus.queued
    assert store.get("video_missing") is None


def test_status_changes_only_from_the_allowed_states(store: Store) -> None:
    record = _record()
    store.create(record)
    assert store.finish(record.id, VideoStatus.cancelled, only_if=ACTIVE) == 1
    # A worker finishing after the cancel does not overwrite it.
    assert (
        store.finish(record.id, VideoStatus.completed, only_if=frozenset({VideoStatus.in_progress}))
        == 0
    )
    done = store.get(record.id)
    assert done.status is VideoStatus.cancelled and done.expires_at == done.completed_at + 60
    assert store.update("video_missing", progress=5) == -1


def test_list_pages_in_both_orders(store: Store) -> None:
    ids = []
    for _ in range(5):
        record = _record()
        store.create(record)
        ids.append(record.id)
    page, more = store.list_videos(limit=2)
    assert [r.id for r in page] == ids[::-1][:2] and more
    page, more = store.list_videos(limit=10, after=ids[1])
    assert [r.id for r in page] == [ids[0]] and not more
    page, more = store.list_videos(order="asc", limit=3, after=ids[0])
    assert [r.id for r in page] == ids[1:4] and more
    with pytest.raises(KeyError):
        store.list_videos(after="video_unknown")


def test_delete_and_expiry_remove_record_and_files(store: Store) -> None:
    old, fresh = _record(), _record()
    for record in (old, fresh):
        store.create(record)
        store.video_dir(record.id).mkdir(parents=True)
        (store.video_dir(record.id) / "video.mp4").write_bytes(b"x")
        store.finish(record.id, VideoStatus.completed, only_if=ACTIVE)
    assert store.delete_expired(now=time.time() + 30) == []
    store.redis.zadd("videopoet:expiry", {old.id: time.time() - 1})
    assert store.sweep(lock_seconds=1) == [old.id]
    assert store.get(old.id) is None and not store.video_dir(old.id).exists()
    assert store.get(fresh.id) is not None
    assert store.delete(fresh.id) and not store.video_dir(fresh.id).exists()
    assert not store.delete(fresh.id)
