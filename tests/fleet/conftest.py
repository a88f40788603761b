"""The fleet fixture: Redis, S3, the API (with the notifier) and two workers, each on a host of
its own (a network namespace: tests/fleet/hosts.py), driven from a client host.

Root and iproute2 are required. Under CI (env CI set) their absence fails the test; elsewhere
it is skipped with the reason, as tests/test_compose.py treats docker-compose.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from redis import Redis

from core.keys import hash_key, new_key
from core.queue import WORKERS_KEY, queue_name
from core.webhooks import new_secret
from tests.conftest import MODEL, REPO, free_port, wait_for
from tests.fleet.hosts import Fleet, FleetUnavailable, Receiver, check_requirements
from tests.s3server import ACCESS_KEY, BUCKET, SECRET_KEY, weed_command

REDIS_PORT = 6379
API_PORT = 8000
PREFIX = "fleet"
WORKERS = ("worker-a", "worker-b")
STARTUP_SECONDS = 90.0

# Fleets this module started and not yet closed: a failing test's report gets their logs.
ACTIVE: list[Fleet] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed:
        for fleet in ACTIVE:
            report.sections.append((f"fleet {fleet.prefix} logs", fleet.logs()))


@dataclass
class Hosts:
    """What a test sees of the fleet."""

    fleet: Fleet
    api_url: str
    api_key: str
    redis_url: str
    s3_endpoint: str
    secret: str
    receiver: Receiver
    worker_names: dict[str, str]  # host -> worker name

    def http(self) -> httpx.Client:
        """An HTTP client for the API; use it only inside `fleet.client` calls."""
        return httpx.Client(
            base_url=self.api_url,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=10,
        )

    def redis(self) -> Redis:
        return Redis.from_url(self.redis_url, decode_responses=True, socket_timeout=5)

    def s3(self):
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=2
            ),
        )


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    try:
        check_requirements()
    except FleetUnavailable as exc:
        # CI runs as root with iproute2 (.ci/run): there a missing piece is a failure
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"no fleet: {exc}")
    from cli.main import redis_server_exe

    folder = tmp_path_factory.mktemp("fleet")
    fleet = Fleet(folder)
    ACTIVE.append(fleet)
    try:
        fleet.build_network()
        redis_url = f"redis://{fleet.address('redis')}:{REDIS_PORT}/0"
        s3_port = free_port()
        s3_endpoint = f"http://{fleet.address('s3')}:{s3_port}"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("VIDEOPOET_", "AWS_"))}

        (folder / "redis").mkdir()
        fleet.spawn(
            "redis",
            "redis-server",
            [
                redis_server_exe(),
                "--bind",
                fleet.address("redis"),
                "--port",
                str(REDIS_PORT),
                "--protected-mode",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(folder / "redis"),
            ],
            base,
        )
        (folder / "s3").mkdir()
        # its other ports are free ones of this machine: SeaweedFS names Unix sockets in /tmp
        # after them, and /tmp is shared by every namespace
        fleet.spawn(
            "s3",
            "weed",
            weed_command(folder / "s3", fleet.address("s3"), s3_port),
            base,
            cwd=folder / "s3",
        )

        key, secret = new_key(), new_secret()
        receiver = fleet.start_receiver()
        hosts = Hosts(
            fleet,
            f"http://{fleet.address('api')}:{API_PORT}",
            key,
            redis_url,
            s3_endpoint,
            secret,
            receiver,
            {host: f"{host}-{fleet.prefix}" for host in WORKERS},
        )

        def ping() -> bool:
            client = hosts.redis()
            try:
                return bool(client.ping())
            finally:
                client.close()

        def redis_up() -> bool:
            try:
                return fleet.client(ping)
            except Exception:
                return False

        def bucket_made() -> bool:
            try:
                fleet.client(lambda: hosts.s3().create_bucket(Bucket=BUCKET))
                return True
            except Exception as exc:  # not up yet, or the bucket is there already
                return "BucketAlreadyOwnedByYou" in str(exc) or "BucketAlreadyExists" in str(exc)

        wait_for(redis_up, 20, "redis-server on the redis host", interval=0.2)

        def service_env(host: str) -> dict[str, str]:
            data = folder / host
            data.mkdir(exist_ok=True)
            return {
                **base,
                "PYTHONPATH": str(REPO),
                "VIDEOPOET_REDIS_URL": redis_url,
                "VIDEOPOET_DATA_DIR": str(data),
                "VIDEOPOET_MODEL": MODEL,
                "VIDEOPOET_ARTIFACT_URL": f"s3://{BUCKET}/{PREFIX}",
                "VIDEOPOET_S3_ENDPOINT_URL": s3_endpoint,
                "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_DEFAULT_REGION": "us-east-1",
                "VIDEOPOET_API_KEYS": "sha256:" + hash_key(key),
                "VIDEOPOET_PIPELINE_FACTORY": "tests.workers.faulty_pipeline:load",
                "VIDEOPOET_TORCH_THREADS": "1",
                "VIDEOPOET_JOB_TIMEOUT_SECONDS": "120",
                # a lost worker is noticed within seconds
                "VIDEOPOET_HEARTBEAT_SECONDS": "1",
                "VIDEOPOET_WORKER_LOST_SECONDS": "4",
                "VIDEOPOET_MAINTENANCE_INTERVAL_SECONDS": "2",
                "VIDEOPOET_MAX_RETRIES": "2",
                # two jobs a batch, gathered for up to half a second: both workers take some
                "VIDEOPOET_BATCH_SIZE": "2",
                "VIDEOPOET_BATCH_WINDOW_SECONDS": "0.5",
                "VIDEOPOET_WEBHOOK_SECRET": secret,
                "VIDEOPOET_WEBHOOK_URLS": receiver.url + "/hooks",
                "VIDEOPOET_WEBHOOK_ALLOW_PRIVATE": "1",
                "VIDEOPOET_WEBHOOK_BACKOFF_SECONDS": "1",
                "VIDEOPOET_WEBHOOK_RETRY_SECONDS": "30",
                "VIDEOPOET_WEBHOOK_TIMEOUT_SECONDS": "3",
            }

        for host, name in hosts.worker_names.items():
            fleet.python(
                host,
                "worker",
                ["-m", "cli.main", "worker", "--name", name, "--metrics-port", "0"],
                service_env(host),
            )
        wait_for(bucket_made, STARTUP_SECONDS, "SeaweedFS's S3 gateway on the s3 host", 0.25)
        api_env = service_env("api")
        fleet.python(
            "api",
            "api",
            ["-m", "cli.main", "api", "--host", fleet.address("api"), "--port", str(API_PORT)],
            api_env,
        )
        fleet.python(
            "api", "notifier", ["-m", "cli.main", "notifier", "--name", "notifier"], api_env
        )

        def api_up() -> bool:
            try:
                return fleet.client(lambda: hosts.http().get("/healthz").status_code == 200)
            except httpx.HTTPError:
                return False

        def workers_ready() -> bool:
            for proc in fleet.procs:
                if proc.popen.poll() is not None:
                    raise RuntimeError(f"{proc.host}'s {proc.name} exited")

            def beacons() -> bool:
                client = hosts.redis()
                key = WORKERS_KEY.format(queue_name(MODEL))
                try:
                    return all(
                        client.zscore(key, name) is not None for name in hosts.worker_names.values()
                    )
                finally:
                    client.close()

            return fleet.client(beacons)

        wait_for(api_up, 30, "the API on the api host", interval=0.2)
        wait_for(workers_ready, STARTUP_SECONDS, "both workers' beacons", interval=0.5)
    except BaseException:
        print(fleet.logs())  # shown with the setup error
        ACTIVE.remove(fleet)
        fleet.close()
        raise
    try:
        yield hosts
    finally:
        ACTIVE.remove(fleet)
        fleet.close()
