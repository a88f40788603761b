"""workers/previews.py on a real Redis, a real ffmpeg and the folder store: a preview is an mp4
of the frames given, recorded only on a running video that asked for previews and, with
`expect`, only for the run that holds it; a failure to store it is a warning, not an error."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
from redis import Redis

from core.artifacts import ArtifactError
from core.store import Store, VideoRecord, VideoStatus, new_video_id
from models import media
from models.spec import Task, TaskSpec
from workers import metrics
from workers.previews import PREVIEW_NAME, publish_preview

FPS = 8.0


def _frames(count: int, shade: int = 0) -> np.ndarray:
    """`count` 16x16 frames with a square moving right."""
    frames = np.full((count, 16, 16, 3), shade, dtype=np.uint8)
    for t in range(count):
        frames[t, 4:10, t % 10 : t % 10 + 6] = (220, 40, 40)
    return frames


def _record(**fields: object) -> VideoRecord:
    spec = TaskSpec(task=Task.text_to_video, prompt="a ball", seed=1)
    values: dict[str, object] = dict(
        id=new_video_id(),
        model="tiny",
        created_at=int(time.time()),
        seconds="2.125",
        size="16x16",
        task=spec.task,
        spec=spec,
        status=VideoStatus.in_progress,
        attempts=1,
        preview=True,
    )
    return VideoRecord(**{**values, **fields})  # type: ignore[arg-type]


@pytest.fixture
def store(redis: Redis, tmp_path: Path) -> Store:
    return Store(redis, tmp_path / "artifacts")


def _published(store: Store, video_id: str) -> int:
    """Frames in the stored preview.mp4 (its duration times its frame rate)."""
    with store.artifacts.local_files(video_id, [PREVIEW_NAME]) as paths:
        info = media.probe(paths[PREVIEW_NAME])
    assert info.has_video and not info.has_audio
    assert info.duration is not None and info.fps
    return round(info.duration * info.fps)


def test_a_preview_is_an_mp4_of_the_frames_and_is_recorded(store: Store) -> None:
    record = _record()
    store.create(record)
    counted = metrics.PREVIEWS.labels("tiny")._value.get()

    assert publish_preview(store, record.id, _frames(5), FPS, 0)
    stored = store.get(record.id)
    assert stored is not None
    assert stored.outputs == {"preview": PREVIEW_NAME}
    assert (stored.preview_frames, stored.preview_index) == (5, 0)
    assert _published(store, record.id) == 5

    # The next replaces it: the record and the file say the same.
    assert publish_preview(store, record.id, _frames(9), FPS, 1, expect=1)
    stored = store.get(record.id)
    assert stored is not None and (stored.preview_frames, stored.preview_index) == (9, 1)
    assert _published(store, record.id) == 9
    assert metrics.PREVIEWS.labels("tiny")._value.get() == counted + 2
    # Nothing else is left in the video's folder (each call encodes into a name of its own).
    assert store.artifacts.names(record.id) == [PREVIEW_NAME]


def test_only_the_run_that_holds_the_video_publishes(store: Store) -> None:
    record = _record(attempts=2)
    store.create(record)
    # A run that lost the video (attempt 1, found abandoned and claimed again) publishes
    # nothing: no file, no record change.
    assert not publish_preview(store, record.id, _frames(5), FPS, 0, expect=1)
    stored = store.get(record.id)
    assert stored is not None and stored.preview_index is None and stored.outputs == {}
    assert not store.artifacts.exists(record.id, PREVIEW_NAME)
    assert publish_preview(store, record.id, _frames(5), FPS, 0, expect=2)


@pytest.mark.parametrize(
    "status", [VideoStatus.queued, VideoStatus.completed, VideoStatus.failed, VideoStatus.cancelled]
)
def test_a_video_that_is_not_running_takes_no_preview(store: Store, status: VideoStatus) -> None:
    outputs = {"video": "video.mp4"} if status is VideoStatus.completed else {}
    record = _record(status=status, outputs=outputs)
    store.create(record)
    assert not publish_preview(store, record.id, _frames(5), FPS, 3)
    stored = store.get(record.id)
    assert stored is not None
    assert stored.preview_index is None and stored.preview_frames == 0
    assert stored.outputs == outputs


def test_a_video_that_did_not_ask_for_previews_gets_none(store: Store) -> None:
    record = _record(preview=False)
    store.create(record)
    assert not publish_preview(store, record.id, _frames(5), FPS, 0)
    assert not store.artifacts.exists(record.id, PREVIEW_NAME)
    assert not publish_preview(store, new_video_id(), _frames(5), FPS, 0)  # no such video


def test_a_cancel_while_it_encodes_keeps_the_cancelled_record(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = _record()
    store.create(record)
    encode = media.encode_video

    def cancelled_meanwhile(*args: object, **kwargs: object) -> Path:
        store.finish(record.id, VideoStatus.cancelled, only_if=frozenset({VideoStatus.in_progress}))
        return encode(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(media, "encode_video", cancelled_meanwhile)
    assert not publish_preview(store, record.id, _frames(5), FPS, 0)
    stored = store.get(record.id)
    assert stored is not None and stored.status is VideoStatus.cancelled
    assert stored.preview_index is None


def test_a_storage_failure_is_a_warning_not_an_error(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    record = _record()
    store.create(record)

    def refused(*args: object, **kwargs: object) -> None:
        raise ArtifactError("s3://bucket/prefix: storing a file failed (AccessDenied)")

    # The folder store renames in place; any other store puts the file.
    monkeypatch.setattr(store.artifacts, "local_path", lambda *args: None)
    monkeypatch.setattr(store.artifacts, "put_file", refused)
    with caplog.at_level(logging.WARNING, logger="workers.previews"):
        assert not publish_preview(store, record.id, _frames(5), FPS, 0)
    assert "AccessDenied" in caplog.text
    stored = store.get(record.id)
    assert stored is not None and stored.preview_index is None

    # So is an encode that fails (here: ffmpeg is given no time at all).
    monkeypatch.undo()
    with caplog.at_level(logging.WARNING, logger="workers.previews"):
        assert not publish_preview(store, record.id, _frames(5), FPS, 0, timeout=1e-6)
    assert "preview 0 of video" in caplog.text
    # Frames of the wrong shape are the caller's mistake.
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        publish_preview(store, record.id, np.zeros((16, 16, 3), np.uint8), FPS, 0)
