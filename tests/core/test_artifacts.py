"""The artifact store's two backends against the same contract: the folder store on a temp
folder, and S3 on a real SeaweedFS (tests/s3server.py). Then what only S3 has: presigned
URLs that expire, and the reasons it gives when the bucket or the credentials are wrong."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from redis import Redis

from core.artifacts import (
    ArtifactError,
    ArtifactMissing,
    Artifacts,
    FolderArtifacts,
    RangeNotSatisfiable,
    S3Artifacts,
    open_artifacts,
    parse_range,
    parse_s3_url,
)
from core.config import Settings
from core.store import Store, VideoStatus, new_video_id
from tests.core.test_store import _record
from tests.s3server import S3Server

DATA = bytes(range(256)) * 10  # 2,560 bytes


@pytest.fixture(params=["folder", "s3"])
def artifacts(request: pytest.FixtureRequest, tmp_path: Path) -> Artifacts:
    if request.param == "folder":
        return FolderArtifacts(tmp_path / "artifacts")
    s3: S3Server = request.getfixturevalue("s3_server")
    env = s3.env(s3.new_prefix())
    mp = request.getfixturevalue("monkeypatch")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        mp.setenv(name, env[name])
    return S3Artifacts(env["VIDEOPOET_ARTIFACT_URL"], endpoint_url=s3.endpoint)


def test_files_round_trip_and_are_deleted_together(artifacts: Artifacts, tmp_path: Path) -> None:
    video, other = new_video_id(), new_video_id()
    source = tmp_path / "clip.mp4"
    source.write_bytes(DATA)
    artifacts.check()
    artifacts.put_file(video, "video.mp4", source)
    artifacts.put_bytes(video, "thumbnail.webp", b"thumb")
    artifacts.put_bytes(other, "video.mp4", b"other")
    assert artifacts.names(video) == ["thumbnail.webp", "video.mp4"]
    assert artifacts.exists(video, "video.mp4") and not artifacts.exists(video, "image.png")

    whole = artifacts.read(video, "video.mp4")
    assert (whole.status, whole.length, b"".join(whole.chunks)) == (200, len(DATA), DATA)
    part = artifacts.read(video, "video.mp4", "bytes=100-299")
    assert (part.status, part.content_range) == (206, f"bytes 100-299/{len(DATA)}")
    assert b"".join(part.chunks) == DATA[100:300] and part.length == 200
    tail = artifacts.read(video, "video.mp4", "bytes=-10")
    assert b"".join(tail.chunks) == DATA[-10:] and tail.status == 206
    with pytest.raises(RangeNotSatisfiable) as past:
        artifacts.read(video, "video.mp4", f"bytes={len(DATA) + 5}-")
    assert past.value.total == len(DATA)

    copy = artifacts.fetch(video, "video.mp4", tmp_path / "copy" / "input.mp4")
    assert copy.read_bytes() == DATA
    with artifacts.local_files(video, ["video.mp4", "thumbnail.webp"]) as paths:
        assert paths["thumbnail.webp"].read_bytes() == b"thumb"
    with artifacts.scratch(video) as folder:
        (folder / "spritesheet.jpg").write_bytes(b"sprites")
        artifacts.publish(video, folder, ["spritesheet.jpg"])
    assert artifacts.read(video, "spritesheet.jpg").length == 7

    with pytest.raises(ArtifactMissing):
        artifacts.read(video, "image.png")
    with pytest.raises(ArtifactMissing):
        artifacts.fetch(video, "image.png", tmp_path / "nothing.png")
    artifacts.delete(video)
    assert artifacts.names(video) == [] and artifacts.names(other) == ["video.mp4"]
    artifacts.delete(video)  # nothing left to delete is fine


def test_no_name_reaches_outside_the_store(artifacts: Artifacts) -> None:
    for owner in ("../etc", "video_x", "char_" + "0" * 31, ""):
        with pytest.raises(ValueError):
            artifacts.put_bytes(owner, "video.mp4", b"x")
    for name in ("../video.mp4", "a/b.mp4", ".hidden", ""):
        with pytest.raises(ValueError):
            artifacts.put_bytes(new_video_id(), name, b"x")


def test_objects_live_under_the_prefix_and_go_with_the_video(
    s3_server: S3Server, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = s3_server.new_prefix()
    for name, value in s3_server.env(prefix).items():
        monkeypatch.setenv(name, value)
    store = Store(redis, open_artifacts(Settings()), retention_seconds=0)
    assert isinstance(store.artifacts, S3Artifacts)
    kept, expired = _record(), _record()
    for record in (kept, expired):
        store.create(record)
        store.artifacts.put_bytes(record.id, "video.mp4", b"mp4")
    assert s3_server.keys(prefix) == sorted(f"{prefix}/{r.id}/video.mp4" for r in (kept, expired))

    store.finish(expired.id, VideoStatus.completed, only_if=frozenset({VideoStatus.queued}))
    assert store.delete_expired(now=time.time() + 1) == [expired.id]
    assert s3_server.keys(prefix) == [f"{prefix}/{kept.id}/video.mp4"]
    assert store.delete(kept.id) and s3_server.keys(prefix) == []


def test_a_video_whose_objects_cannot_be_deleted_keeps_its_record(
    s3_server: S3Server, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = s3_server.new_prefix()
    for name, value in s3_server.env(prefix, secret_key="wrong-secret").items():
        monkeypatch.setenv(name, value)
    store = Store(redis, open_artifacts(Settings()), retention_seconds=0)
    record = _record()
    store.create(record)
    store.finish(record.id, VideoStatus.failed, only_if=frozenset({VideoStatus.queued}))
    # Refused: the record stays (and in the expiry set) so a later sweep tries again.
    assert store.delete_expired(now=time.time() + 1) == []
    assert store.get(record.id) is not None
    with pytest.raises(ArtifactError, match="refused"):
        store.delete(record.id)


def test_a_presigned_url_serves_the_file_until_it_expires(s3_server: S3Server, monkeypatch) -> None:
    env = s3_server.env(s3_server.new_prefix())
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(name, env[name])
    store = S3Artifacts(env["VIDEOPOET_ARTIFACT_URL"], endpoint_url=s3_server.endpoint)
    video = new_video_id()
    store.put_bytes(video, "video.mp4", DATA)
    url = store.presign(
        video, "video.mp4", expires_seconds=2, filename=f"{video}.mp4", media_type="video/mp4"
    )
    assert url is not None and url.startswith(s3_server.endpoint)
    got = httpx.get(url)  # no credentials: the signature in the URL is the permission
    assert got.status_code == 200 and got.content == DATA
    assert got.headers["content-type"] == "video/mp4"
    assert f"{video}.mp4" in got.headers["content-disposition"]
    time.sleep(3)
    assert httpx.get(url).status_code == 403


def test_bad_credentials_a_missing_bucket_or_endpoint_say_why_without_secrets(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = "wrong-secret-value"
    env = s3_server.env(s3_server.new_prefix(), secret_key=secret)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(name, env[name])
    refused = S3Artifacts(env["VIDEOPOET_ARTIFACT_URL"], endpoint_url=s3_server.endpoint)
    messages = []
    for attempt in (refused.check, lambda: refused.put_bytes(new_video_id(), "a.png", b"x")):
        with pytest.raises(ArtifactError) as caught:
            attempt()
        messages.append(str(caught.value))
    assert all("refused" in m and "credentials" in m for m in messages), messages
    assert f"s3://{s3_server.bucket}/" in messages[0]

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    missing = S3Artifacts("s3://no-such-bucket-here/x", endpoint_url=s3_server.endpoint)
    with pytest.raises(ArtifactError, match="does not exist") as caught:
        missing.check()
    messages.append(str(caught.value))

    from tests.conftest import free_port

    closed = f"http://user:endpoint-password@127.0.0.1:{free_port()}"
    away = S3Artifacts(f"s3://{s3_server.bucket}/x", endpoint_url=closed)
    with pytest.raises(ArtifactError, match="unreachable") as caught:
        away.check()
    messages.append(str(caught.value))
    for message in messages:
        for hidden in (secret, s3_server.secret_key, s3_server.access_key, "endpoint-password"):
            assert hidden not in message, message

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    nobody = S3Artifacts(f"s3://{s3_server.bucket}/x", endpoint_url=s3_server.endpoint)
    with pytest.raises(ArtifactError, match="no credentials"):
        nobody.check()


def test_the_settings_name_the_store() -> None:
    assert isinstance(open_artifacts(Settings(artifact_dir=Path("/tmp/a"))), FolderArtifacts)
    s3 = open_artifacts(Settings(artifact_url="s3://my-bucket/some/prefix/"))
    assert isinstance(s3, S3Artifacts)
    assert (s3.bucket, s3.prefix) == ("my-bucket", "some/prefix")
    assert s3.key("video_" + "a" * 32, "video.mp4") == f"some/prefix/video_{'a' * 32}/video.mp4"
    assert Settings(artifact_url="").artifact_url is None
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    for bad in ("http://bucket/x", "s3://B/x", "s3://ab/x", "s3://bucket/a//b", "bucket"):
        with pytest.raises(ValueError, match="s3://BUCKET/PREFIX|empty or dot"):
            parse_s3_url(bad)
    with pytest.raises(ValueError, match="VIDEOPOET_ARTIFACT_URL must be"):
        Settings(artifact_url="s3://user:secret@x/y")
    with pytest.raises(ValueError) as caught:
        Settings(artifact_url="s3://user:hunter2@bucket/y")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ValueError, match="http:// or https://"):
        Settings(s3_endpoint_url="localhost:8333")


def test_ranges_are_parsed_as_one_span_or_ignored() -> None:
    assert parse_range("bytes=0-99") == (0, 99)
    assert parse_range("bytes=5-") == (5, None)
    assert parse_range("bytes=-5") == (None, 5)
    for ignored in (None, "", "bytes=1-2,4-5", "items=1-2", "bytes=9-3", "bytes=-"):
        assert parse_range(ignored) == (None, None)
