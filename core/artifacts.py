"""Where the files of videos and characters live: one interface, two backends.

Files are stored under (owner id, name): the owner is a video (`video_<hex>`: its inputs and
outputs) or a character (`char_<hex>`: its reference). Nothing else names a location, so no
request can reach outside the store.

- `FolderArtifacts` (the default): `<artifact_dir>/<id>/<name>` on a disk; with several
  machines, a folder they all mount.
- `S3Artifacts` (`VIDEOPOET_ARTIFACT_URL=s3://BUCKET/PREFIX`): the object
  `PREFIX/<id>/<name>` in an S3 bucket or an S3-compatible server
  (`VIDEOPOET_S3_ENDPOINT_URL`), through boto3, with its credential chain (the standard
  `AWS_*` variables, a profile, an instance role). No machine shares a folder with another.

The rooms use files in two ways. Whoever makes files (the API writing uploads, a worker
encoding outputs) writes them into `scratch(id)`, a local folder, and then calls
`publish(id, folder, names)`; whoever reads them with ffmpeg gets local paths from
`local_files(id, names)`. With the folder store both are the video's folder itself (nothing
is copied); with S3 they are temporary folders that are uploaded from or downloaded into.
The API serves downloads with `local_path` (a file on disk) or `read` (a stream, with a byte
range), or redirects to `presign`'s URL.

Failures of the storage (unreachable, credentials refused, no such bucket) raise
`ArtifactError` with a message that names the store (`describe()`, without secrets) and says
what went wrong; `ArtifactMissing` is a file that is not stored.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from core.redact import redact_text, redact_url

if TYPE_CHECKING:
    from core.config import Settings

# What a store's owner id looks like: a video's or a character's id. Anything else names no
# folder or key.
OWNER_ID_RE = re.compile(r"(video|char)_[0-9a-f]{32}")
# File names inside an owner's folder: written by the service only ("input_video.mp4").
FILE_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# S3 bucket names (the rules of AWS: 3 to 63 lower-case letters, digits, dots and hyphens).
BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# Bytes per read of a streamed download.
CHUNK_BYTES = 1024 * 1024
# What the readiness check calls (HeadBucket: the bucket exists and the credentials are taken).
CHECK = "the bucket check (HeadBucket)"
# A single byte range of a Range header: "bytes=START-END", "bytes=START-" or "bytes=-LAST".
_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")


class ArtifactError(Exception):
    """The storage failed. The message names the store and the reason; it holds no secret
    and may be shown to a client."""


class ArtifactMissing(ArtifactError):
    """The file is not stored (never was, or was deleted)."""


def check_owner_id(owner_id: str) -> str:
    if not OWNER_ID_RE.fullmatch(owner_id):
        raise ValueError(f"not a video or character id: {owner_id!r}")
    return owner_id


def check_name(name: str) -> str:
    if not FILE_NAME_RE.fullmatch(name) or ".." in name:
        raise ValueError(f"not a stored file name: {name!r}")
    return name


@dataclass
class Blob:
    """One stored file, or a byte range of it, as a stream of chunks."""

    status: int  # 200 (the whole file) or 206 (a range)
    length: int  # bytes the chunks hold
    total: int  # bytes of the whole file
    chunks: Iterator[bytes]
    content_range: str | None = None  # "bytes START-END/TOTAL" for a 206
    _close: list[Any] = field(default_factory=list)

    def headers(self) -> dict[str, str]:
        headers = {"Content-Length": str(self.length), "Accept-Ranges": "bytes"}
        if self.content_range:
            headers["Content-Range"] = self.content_range
        return headers


def parse_range(header: str | None, total: int | None = None) -> tuple[int | None, int | None]:
    """(start, end) of a single byte range (`end` inclusive; None where the header leaves it
    open; a suffix range "-N" is (None, N)); (None, None) when there is no usable range (a
    missing, malformed or multi-range header is served whole, as RFC 9110 allows)."""
    if not header:
        return None, None
    match = _RANGE_RE.fullmatch(header.strip().replace(" ", ""))
    if match is None or (not match.group(1) and not match.group(2)):
        return None, None
    start = int(match.group(1)) if match.group(1) else None
    end = int(match.group(2)) if match.group(2) else None
    if start is not None and end is not None and end < start:
        return None, None
    return start, end


class Artifacts(ABC):
    """The storage interface the API and the workers use (see the module's docstring)."""

    kind: str  # "folder" or "s3"

    @abstractmethod
    def describe(self) -> str:
        """Where the files are, for logs and reasons: a folder, or s3://bucket/prefix (at an
        endpoint); never a secret."""

    @abstractmethod
    def check(self) -> None:
        """Raise ArtifactError saying why files cannot be stored or read now."""

    @abstractmethod
    def put_file(self, owner_id: str, name: str, path: Path) -> None:
        """Store a local file under (owner id, name)."""

    def put_bytes(self, owner_id: str, name: str, data: bytes) -> None:
        with tempfile.TemporaryDirectory(prefix="videopoet-put-") as folder:
            path = Path(folder) / check_name(name)
            path.write_bytes(data)
            self.put_file(owner_id, name, path)

    @abstractmethod
    def fetch(self, owner_id: str, name: str, dest: Path) -> Path:
        """A local copy of a stored file at `dest` (a hard link where the store allows);
        ArtifactMissing when it is not stored."""

    @abstractmethod
    def local_path(self, owner_id: str, name: str) -> Path | None:
        """The stored file as a path on this machine (folder store); None in object storage."""

    @abstractmethod
    def exists(self, owner_id: str, name: str) -> bool: ...

    @abstractmethod
    def read(self, owner_id: str, name: str, byte_range: str | None = None) -> Blob:
        """The file, or the single range a Range header asks for, as a stream. ArtifactMissing
        when it is not stored; ArtifactError("... range ...") for a range past its end."""

    @abstractmethod
    def names(self, owner_id: str) -> list[str]:
        """The names stored under an owner id, sorted."""

    @abstractmethod
    def delete(self, owner_id: str) -> None:
        """Remove every file of an owner id (nothing to remove is fine)."""

    def presign(
        self, owner_id: str, name: str, *, expires_seconds: int, filename: str, media_type: str
    ) -> str | None:
        """A URL that serves the file without credentials until it expires; None where the
        store has no such URLs (the folder store)."""
        return None

    @abstractmethod
    def scratch(self, owner_id: str) -> contextlib.AbstractContextManager[Path]:
        """A local folder to write an owner's new files into before `publish`."""

    @abstractmethod
    def publish(self, owner_id: str, folder: Path, names: Iterable[str]) -> None:
        """Store the named files written in `scratch(owner_id)`."""

    @contextlib.contextmanager
    def local_files(self, owner_id: str, names: Iterable[str]) -> Iterator[dict[str, Path]]:
        """Local paths of stored files (name -> path) while inside: the files themselves in
        the folder store, copies in a temporary folder otherwise."""
        wanted = sorted(set(names))
        paths = {}
        local = {name: self.local_path(owner_id, name) for name in wanted}
        if all(path is not None for path in local.values()):
            for name, path in local.items():
                assert path is not None
                if not path.is_file():
                    raise ArtifactMissing(f"{name} of {owner_id} is not stored")
                paths[name] = path
            yield paths
            return
        with tempfile.TemporaryDirectory(prefix=f"videopoet-{owner_id}-") as folder:
            for name in wanted:
                paths[name] = self.fetch(owner_id, name, Path(folder) / name)
            yield paths


# --- the folder store ----------------------------------------------------------------------
class FolderArtifacts(Artifacts):
    """`<root>/<id>/<name>`: the layout the service always had."""

    kind = "folder"

    def __init__(self, root: Path):
        self.root = Path(root)

    def describe(self) -> str:
        return f"folder {self.root}"

    def folder(self, owner_id: str) -> Path:
        return self.root / check_owner_id(owner_id)

    def path(self, owner_id: str, name: str) -> Path:
        return self.folder(owner_id) / check_name(name)

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArtifactError(f"{self.describe()} cannot be created: {exc.strerror}") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise ArtifactError(f"{self.describe()} is not writable by this process")

    def put_file(self, owner_id: str, name: str, path: Path) -> None:
        dest = self.path(owner_id, name)
        if Path(path).resolve() == dest.resolve():
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(Path(path), dest)

    def fetch(self, owner_id: str, name: str, dest: Path) -> Path:
        src = self.path(owner_id, name)
        if not src.is_file():
            raise ArtifactMissing(f"{name} of {owner_id} is not stored")
        dest.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(src, dest)
        return dest

    def local_path(self, owner_id: str, name: str) -> Path | None:
        return self.path(owner_id, name)

    def exists(self, owner_id: str, name: str) -> bool:
        return self.path(owner_id, name).is_file()

    def read(self, owner_id: str, name: str, byte_range: str | None = None) -> Blob:
        path = self.path(owner_id, name)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise ArtifactMissing(f"{name} of {owner_id} is not stored") from None
        total = os.fstat(handle.fileno()).st_size
        start, end = parse_range(byte_range)
        if start is None and end is None:
            first, last, status = 0, total - 1, 200
        else:
            first, last = _resolve_range(start, end, total)
            status = 206
        handle.seek(first)

        def chunks() -> Iterator[bytes]:
            with handle:
                left = last - first + 1
                while left > 0:
                    chunk = handle.read(min(CHUNK_BYTES, left))
                    if not chunk:
                        return
                    left -= len(chunk)
                    yield chunk

        length = max(0, last - first + 1)
        content_range = f"bytes {first}-{last}/{total}" if status == 206 else None
        return Blob(status, length, total, chunks(), content_range)

    def names(self, owner_id: str) -> list[str]:
        folder = self.folder(owner_id)
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_file())

    def delete(self, owner_id: str) -> None:
        shutil.rmtree(self.folder(owner_id), ignore_errors=True)

    @contextlib.contextmanager
    def scratch(self, owner_id: str) -> Iterator[Path]:
        # The files are written where they are kept: nothing to copy.
        folder = self.folder(owner_id)
        folder.mkdir(parents=True, exist_ok=True)
        yield folder

    def publish(self, owner_id: str, folder: Path, names: Iterable[str]) -> None:
        for name in names:
            self.put_file(owner_id, name, folder / name)


def _link_or_copy(src: Path, dest: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        dest.unlink()
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def _resolve_range(start: int | None, end: int | None, total: int) -> tuple[int, int]:
    """The inclusive byte span of a parsed range in a file of `total` bytes; ArtifactError
    (a 416 for the API) when it starts past the end."""
    if start is None:  # the last `end` bytes
        first, last = max(0, total - (end or 0)), total - 1
    else:
        first, last = start, min(end if end is not None else total - 1, total - 1)
    if first >= total or (start is None and not end):
        raise RangeNotSatisfiable(total)
    return first, last


class RangeNotSatisfiable(ArtifactError):
    """A byte range that starts past the end of the file."""

    def __init__(self, total: int):
        super().__init__(f"the range starts past the end of the file ({total} bytes)")
        self.total = total


# --- S3 ---------------------------------------------------------------------------------------
class S3Artifacts(Artifacts):
    """`s3://BUCKET/PREFIX/<id>/<name>` through boto3 (credentials: boto3's chain)."""

    kind = "s3"

    def __init__(self, url: str, *, endpoint_url: str | None = None):
        self.bucket, self.prefix = parse_s3_url(url)
        self.endpoint_url = endpoint_url or None
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()  # boto3 sessions are not safe to build from threads

    # --- plumbing --------------------------------------------------------------------------
    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        if self.endpoint_url:
            where += f" at {redact_url(self.endpoint_url)}"
        return where

    def _client(self, quick: bool = False) -> Any:
        """A boto3 S3 client (thread-safe; one per kind): `quick` fails within seconds (the
        readiness check), the other retries and waits as transfers need."""
        kind = "quick" if quick else "transfer"
        with self._lock:
            if kind in self._clients:
                return self._clients[kind]
            import boto3
            from botocore.config import Config

            config = Config(
                signature_version="s3v4",
                s3={"addressing_style": "path" if self.endpoint_url else "auto"},
                connect_timeout=2 if quick else 10,
                read_timeout=5 if quick else 60,
                retries={"max_attempts": 1 if quick else 3, "mode": "standard"},
            )
            session = boto3.session.Session()
            self._clients[kind] = session.client(
                "s3", endpoint_url=self.endpoint_url, config=config
            )
        return self._clients[kind]

    def key(self, owner_id: str, name: str | None = None) -> str:
        parts = [self.prefix] if self.prefix else []
        parts.append(check_owner_id(owner_id))
        if name is not None:
            parts.append(check_name(name))
        else:
            parts.append("")  # the owner's "folder": PREFIX/<id>/
        return "/".join(parts)

    def _error(self, what: str, exc: BaseException) -> ArtifactError:
        """`exc` (a botocore error) as an ArtifactError naming the store and the cause."""
        from botocore.exceptions import (
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        where = self.describe()
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchKey", "404", "NotFound") and what != CHECK:
                return ArtifactMissing(f"{where}: the file is not stored")
            if code in ("NoSuchBucket",) or (code == "404" and what == CHECK):
                return ArtifactError(f"{where}: the bucket {self.bucket!r} does not exist")
            if code in (
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "AccessDenied",
                "403",
                "Forbidden",
                "ExpiredToken",
                "InvalidToken",
            ) or status in (401, 403):
                return ArtifactError(
                    f"{where}: {what} was refused ({code or status}): the credentials are wrong "
                    "or not allowed on this bucket (boto3's chain: AWS_ACCESS_KEY_ID / "
                    "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance role)"
                )
            message = redact_text(str(error.get("Message") or exc))
            return ArtifactError(f"{where}: {what} failed ({code or status}): {message}")
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return ArtifactError(
                f"{where}: no credentials for object storage: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or run with an instance role)"
            )
        if isinstance(exc, EndpointConnectionError):
            return ArtifactError(f"{where}: the storage endpoint is unreachable")
        return ArtifactError(
            f"{where}: {what} failed: {type(exc).__name__}: {redact_text(str(exc))}"
        )

    @contextlib.contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            raise self._error(what, exc) from None

    # --- the interface ---------------------------------------------------------------------
    def check(self) -> None:
        with self._calling(CHECK):
            self._client(quick=True).head_bucket(Bucket=self.bucket)

    def put_file(self, owner_id: str, name: str, path: Path) -> None:
        key = self.key(owner_id, name)
        with self._calling("storing a file"), Path(path).open("rb") as body:
            self._client().put_object(Bucket=self.bucket, Key=key, Body=body)

    def fetch(self, owner_id: str, name: str, dest: Path) -> Path:
        key = self.key(owner_id, name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self._calling("reading a file"):
            response = self._client().get_object(Bucket=self.bucket, Key=key)
            with dest.open("wb") as out:
                for chunk in response["Body"].iter_chunks(CHUNK_BYTES):
                    out.write(chunk)
        return dest

    def local_path(self, owner_id: str, name: str) -> Path | None:
        return None

    def exists(self, owner_id: str, name: str) -> bool:
        try:
            with self._calling("looking up a file"):
                self._client().head_object(Bucket=self.bucket, Key=self.key(owner_id, name))
        except ArtifactMissing:
            return False
        return True

    def read(self, owner_id: str, name: str, byte_range: str | None = None) -> Blob:
        key = self.key(owner_id, name)
        start, end = parse_range(byte_range)
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if start is not None or end is not None:
            args["Range"] = f"bytes={'' if start is None else start}-{'' if end is None else end}"
        from botocore.exceptions import ClientError

        with self._calling("reading a file"):
            try:
                response = self._client().get_object(**args)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "InvalidRange":
                    raise
                head = self._client().head_object(Bucket=self.bucket, Key=key)
                raise RangeNotSatisfiable(int(head["ContentLength"])) from None
        body = response["Body"]
        length = int(response["ContentLength"])
        content_range = response.get("ContentRange") if "Range" in args else None
        total = length
        if content_range and "/" in content_range:
            total = int(content_range.rsplit("/", 1)[1])

        def chunks() -> Iterator[bytes]:
            try:
                yield from body.iter_chunks(CHUNK_BYTES)
            finally:
                body.close()

        return Blob(206 if content_range else 200, length, total, chunks(), content_range)

    def names(self, owner_id: str) -> list[str]:
        folder = self.key(owner_id)
        found = []
        with self._calling("listing files"):
            pages = self._client().get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.bucket, Prefix=folder):
                found += [item["Key"][len(folder) :] for item in page.get("Contents", [])]
        return sorted(found)

    def delete(self, owner_id: str) -> None:
        folder = self.key(owner_id)
        with self._calling("deleting files"):
            client = self._client()
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=folder
            ):
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if keys:
                    done = client.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True}
                    )
                    if done.get("Errors"):
                        first = done["Errors"][0]
                        raise ArtifactError(
                            f"{self.describe()}: deleting {first.get('Key')} failed "
                            f"({first.get('Code')})"
                        )

    def presign(
        self, owner_id: str, name: str, *, expires_seconds: int, filename: str, media_type: str
    ) -> str | None:
        params = {
            "Bucket": self.bucket,
            "Key": self.key(owner_id, name),
            "ResponseContentType": media_type,
            "ResponseContentDisposition": f"attachment; filename*=utf-8''{quote(filename)}",
        }
        with self._calling("signing a download"):
            return str(
                self._client().generate_presigned_url(
                    "get_object", Params=params, ExpiresIn=expires_seconds
                )
            )

    @contextlib.contextmanager
    def scratch(self, owner_id: str) -> Iterator[Path]:
        check_owner_id(owner_id)
        with tempfile.TemporaryDirectory(prefix=f"videopoet-{owner_id}-") as folder:
            yield Path(folder)

    def publish(self, owner_id: str, folder: Path, names: Iterable[str]) -> None:
        for name in sorted(set(names)):
            self.put_file(owner_id, name, folder / name)


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of `s3://BUCKET/PREFIX` (the prefix may be empty); ValueError naming
    the accepted form."""
    parts = urlsplit(url.strip())
    bucket = parts.netloc
    if parts.scheme != "s3" or not BUCKET_RE.fullmatch(bucket) or parts.query or parts.fragment:
        raise ValueError(
            "VIDEOPOET_ARTIFACT_URL must be s3://BUCKET/PREFIX (a bucket name of 3 to 63 "
            "lower-case letters, digits, dots and hyphens; the prefix may be empty), or unset "
            f"for the folder VIDEOPOET_ARTIFACT_DIR; got {redact_url(url)!r}"
        )
    prefix = parts.path.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise ValueError(f"VIDEOPOET_ARTIFACT_URL: the prefix {prefix!r} has an empty or dot part")
    return bucket, prefix


def open_artifacts(settings: Settings) -> Artifacts:
    """The store the settings name: S3 when VIDEOPOET_ARTIFACT_URL is set, else the folder."""
    if settings.artifact_url:
        return S3Artifacts(settings.artifact_url, endpoint_url=settings.s3_endpoint_url)
    return FolderArtifacts(settings.artifacts)
