"""docker-compose.yml, docker/prometheus.yml and the Grafana dashboard against the code.

No Docker engine runs here: `docker-compose config` (Debian's `docker-compose` package; .ci/run
installs it) validates the file against the Compose specification without one. The Prometheus
targets must reach the ports the services listen on, and every metric a dashboard query names
must be one the API or a worker really exports, with the labels the query uses.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

import app.metrics
import workers.metrics
from core.queue import JobQueue
from tests.conftest import REPO, Service

COMPOSE_FILE = REPO / "docker-compose.yml"
PROMETHEUS_FILE = REPO / "docker" / "prometheus.yml"
GRAFANA = REPO / "docker" / "grafana"
DASHBOARD_FILE = GRAFANA / "dashboards" / "videopoet.json"
WORKER_SERVICES = ("worker", "worker-cpu")
# What `videopoet key` prints for the settings (the hash of a key).
API_KEYS_SETTING = "sha256:" + "ab" * 32
# Labels Prometheus itself puts on every scraped series.
TARGET_LABELS = {"instance", "job"}
# Sample names of each metric type, from the family name.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}


@cache
def docker_has_compose_plugin() -> bool:
    """A `docker` without the Compose plugin refuses `docker compose` (unknown flag -f)."""
    done = subprocess.run(
        ["docker", "compose", "version"], check=False, capture_output=True, timeout=30
    )
    return done.returncode == 0


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and docker_has_compose_plugin():
        return ["docker", "compose"]
    # CI installs docker-compose (.ci/run): there its absence is a failure, not a skip
    reason = "no docker-compose: apt-get install docker-compose (.ci/run does)"
    (pytest.fail if os.environ.get("CI") else pytest.skip)(reason)


@cache
def empty_env_file() -> Path:
    """An empty `.env`, so a developer's own does not change what the tests read."""
    fd, name = tempfile.mkstemp(suffix=".env")
    os.close(fd)
    atexit.register(os.unlink, name)
    return Path(name)


def run_compose_config(
    *profiles: str, api_keys: str | None = API_KEYS_SETTING
) -> subprocess.CompletedProcess:
    """`docker-compose config` on the file, with no VIDEOPOET_* from this shell or a `.env`."""
    args = [*compose_command(), "-f", str(COMPOSE_FILE), "--env-file", str(empty_env_file())]
    for profile in profiles:
        args += ["--profile", profile]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDEOPOET_")}
    if api_keys is not None:
        env["VIDEOPOET_API_KEYS"] = api_keys
    return subprocess.run(
        [*args, "config"],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
    )


@cache
def compose_config(*profiles: str) -> dict[str, Any]:
    """The compose file as the Compose implementation reads it (validated, interpolated)."""
    done = run_compose_config(*profiles)
    assert done.returncode == 0, f"docker-compose config refused the file:\n{done.stderr}"
    return yaml.safe_load(done.stdout)


def option(command: list[str], name: str) -> str:
    """The value of `--name VALUE` in a container command."""
    assert name in command, f"{command} has no {name}"
    return command[command.index(name) + 1]


def environment(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


# --- the compose file ------------------------------------------------------------------------
def test_compose_file_is_valid_and_keeps_redis_durable() -> None:
    services = compose_config("cpu")["services"]
    assert {"redis", "api", "prometheus", "grafana", *WORKER_SERVICES} <= set(services)

    redis = services["redis"]
    command = redis["command"]
    command = command.split() if isinstance(command, str) else command
    assert option(command, "--appendonly") == "yes"
    assert option(command, "--appendfsync") == "everysec"
    assert option(command, "--maxmemory-policy") == "noeviction"
    assert "redis-cli" in json.dumps(redis["healthcheck"]["test"])
    assert any(v["target"] == "/data" for v in _volumes(redis))

    for name in ("api", *WORKER_SERVICES):
        service = services[name]
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        env = environment(service)
        assert env["VIDEOPOET_REDIS_URL"].startswith("redis://redis:6379")
        artifacts = env["VIDEOPOET_ARTIFACT_DIR"]
        # The API and every worker see the same artifact folder (one named volume).
        assert [v["source"] for v in _volumes(service) if v["target"] == artifacts] == ["artifacts"]
        assert service["build"]["context"] == str(REPO)


def test_the_api_needs_keys_to_listen_beyond_loopback() -> None:
    # The API listens on 0.0.0.0 in its container, which the service refuses without keys:
    # compose says so before anything starts.
    done = run_compose_config(api_keys=None)
    assert done.returncode != 0 and "VIDEOPOET_API_KEYS" in done.stderr
    api = compose_config()["services"]["api"]
    assert environment(api)["VIDEOPOET_API_KEYS"] == API_KEYS_SETTING
    assert option(api["command"], "--host") == "0.0.0.0"
    for name in WORKER_SERVICES:
        assert "VIDEOPOET_API_KEYS" not in environment(compose_config("cpu")["services"][name])


def test_the_s3_profile_adds_seaweedfs_and_the_services_take_its_settings() -> None:
    services = compose_config("s3", "cpu")["services"]
    assert {"seaweedfs", "seaweedfs-bucket"} <= set(services)
    # Only under its profile; the plain stack keeps the artifact folder.
    assert services["seaweedfs"]["profiles"] == services["seaweedfs-bucket"]["profiles"] == ["s3"]
    weed = services["seaweedfs"]
    command = weed["command"]
    assert command[0] == "server" and "-s3" in command and "-s3.port=8333" in command
    # The extra listeners of its S3 gateway are off; nothing is published on the host.
    assert {"-s3.port.iceberg=0", "-s3.port.lance=0"} <= set(command)
    assert "ports" not in weed and any(v["target"] == "/data" for v in _volumes(weed))
    bucket = services["seaweedfs-bucket"]
    assert bucket["depends_on"]["seaweedfs"]["condition"] == "service_healthy"
    assert "s3.bucket.create" in " ".join(bucket["command"])
    for name in ("api", *WORKER_SERVICES):
        env = environment(services[name])
        for setting in (
            "VIDEOPOET_ARTIFACT_URL",
            "VIDEOPOET_S3_ENDPOINT_URL",
            "VIDEOPOET_S3_PRESIGN",
            "VIDEOPOET_S3_PRESIGN_SECONDS",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        ):
            assert setting in env, (name, setting)


def _volumes(service: dict[str, Any]) -> list[dict[str, Any]]:
    volumes = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):  # "source:target[:mode]"
            source, target = volume.split(":")[:2]
            volume = {"source": source, "target": target}
        volumes.append(volume)
    return volumes


def test_workers_scale_and_reserve_a_gpu() -> None:
    services = compose_config("cpu")["services"]
    for name in WORKER_SERVICES:
        worker = services[name]
        # `--scale worker=N` needs replicas that do not collide: no fixed name, no host port.
        assert "container_name" not in worker and "ports" not in worker
        assert worker["command"][0] == "worker"
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "deploy" not in services["worker-cpu"]
    # The GPU worker's image has CUDA PyTorch; the others the CPU build.
    assert "/whl/cu" in services["worker"]["build"]["args"]["TORCH_INDEX"]
    for name in ("api", "worker-cpu"):
        assert services[name]["build"]["args"]["TORCH_INDEX"].endswith("/whl/cpu")
    assert services["worker"]["image"] != services["api"]["image"]
    # The CPU worker only starts under its profile; the plain stack has the GPU one.
    assert services["worker-cpu"]["profiles"] == ["cpu"] and "profiles" not in services["worker"]


def test_dockerfile_runs_as_non_root_on_cpu_torch_by_default() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, re.MULTILINE)
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.MULTILINE)
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in text
    assert '--index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"' in text
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["videopoet"\]$', text, re.MULTILINE)


def test_the_image_holds_every_package_the_service_runs() -> None:
    text = (REPO / "Dockerfile").read_text()
    for package in ("app", "cli", "core", "workers", "models"):
        assert re.search(rf"^COPY {package} {package}$", text, re.MULTILINE), package


# --- Prometheus --------------------------------------------------------------------------------
def test_prometheus_scrapes_the_api_and_every_worker_replica(api: Service) -> None:
    services = compose_config("cpu")["services"]
    config = yaml.safe_load(PROMETHEUS_FILE.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}

    api_job = jobs["videopoet-api"]
    (target,) = [t for group in api_job["static_configs"] for t in group["targets"]]
    host, port = target.split(":")
    assert host == "api" and port == option(services["api"]["command"], "--port")
    # The path Prometheus scrapes is the API's metrics endpoint, in the exposition format.
    response = api.http.get(api_job.get("metrics_path", "/metrics"))
    assert response.status_code == 200
    names = {f.name for f in text_string_to_metric_families(response.text)}
    assert {"videopoet_queue_depth", "videopoet_workers_live"} <= names

    worker_job = jobs["videopoet-worker"]
    (sd,) = worker_job["dns_sd_configs"]
    # DNS service discovery: every replica of each worker service, on its metrics port.
    assert sd.get("type", "SRV") == "A"
    assert set(sd["names"]) == set(WORKER_SERVICES)
    for name in WORKER_SERVICES:
        assert str(sd["port"]) == option(services[name]["command"], "--metrics-port")
        assert str(sd["port"]) in [str(p) for p in services[name].get("expose", [])]


# --- Grafana -----------------------------------------------------------------------------------
@cache
def exported_metrics() -> dict[str, set[str]]:
    """Every sample name the API and the workers export -> the labels it carries."""
    series: dict[str, set[str]] = {}
    for module in (app.metrics, workers.metrics):
        for metric in vars(module).values():
            if isinstance(metric, MetricWrapperBase):
                labels = set(metric._labelnames)
                for suffix in SUFFIXES[metric._type]:
                    extra = {"le"} if suffix == "_bucket" else set()
                    series[metric._name + suffix] = labels | extra
    return series


def queue_metrics(redis_url: str) -> dict[str, set[str]]:
    """The gauges the API reads from Redis at each scrape."""
    connection = Redis.from_url(redis_url)
    try:
        families = app.metrics.QueueCollector(JobQueue(connection, "tiny")).collect()
        return {s.name: set(s.labels) for family in families for s in family.samples}
    finally:
        connection.close()


def dashboard_targets() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    targets = [t for p in panels for t in p["targets"]]
    assert targets and all(t["expr"].strip() for t in targets)
    return targets


def test_dashboard_queries_name_metrics_the_code_exports(redis_url: str) -> None:
    exported = {**exported_metrics(), **queue_metrics(redis_url)}
    problems = []
    used = set()
    for target in dashboard_targets():
        expr = target["expr"]
        names = set(re.findall(r"\bvideopoet_\w+", expr))
        assert names, f"query names no videopoet metric: {expr}"
        used |= names
        unknown = names - exported.keys()
        if unknown:
            problems.append(f"{expr}: not exported: {', '.join(sorted(unknown))}")
            continue
        # Labels grouped by or matched on (and shown in legends) exist on every metric used.
        labels = set()
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            labels |= {label.strip() for label in group.split(",") if label.strip()}
        for matchers in re.findall(r"\{([^}]*)\}", expr):
            labels |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
        labels |= set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
        for name in names:
            missing = labels - exported[name] - TARGET_LABELS
            if missing:
                problems.append(f"{expr}: {name} has no label {', '.join(sorted(missing))}")
    assert not problems, "dashboard queries that match nothing:\n" + "\n".join(problems)

    # The panels the issue asks for: queue depth, queue wait, latency by stage, tokens/s,
    # batch size, failures.
    families = {re.sub(r"_(bucket|sum|count|total)$", "", name) for name in used}
    assert {
        "videopoet_queue_depth",
        "videopoet_queue_wait_seconds",
        "videopoet_job_stage_seconds",
        "videopoet_generated_tokens",
        "videopoet_tokens_per_second",
        "videopoet_batch_size",
        "videopoet_job_failures",
    } <= families


def test_grafana_provisions_the_datasource_and_dashboard_it_mounts() -> None:
    services = compose_config()["services"]
    mounts = {v["target"]: v["source"] for v in _volumes(services["grafana"])}
    provisioning = Path(mounts["/etc/grafana/provisioning"])
    assert provisioning == GRAFANA / "provisioning"

    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert "prometheus" in services

    (provider,) = yaml.safe_load((provisioning / "dashboards" / "videopoet.yml").read_text())[
        "providers"
    ]
    folder = provider["options"]["path"]
    assert Path(mounts[folder]) == DASHBOARD_FILE.parent
    # Every panel queries the provisioned datasource.
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == source["uid"], panel["title"]


def test_the_webhooks_profile_adds_the_notifier_and_every_service_takes_the_settings() -> None:
    services = compose_config("webhooks", "cpu")["services"]
    notifier = services["notifier"]
    # only with its profile (it needs VIDEOPOET_WEBHOOK_SECRET)
    assert notifier["profiles"] == ["webhooks"] and notifier["command"] == ["notifier"]
    assert "ports" not in notifier and "deploy" not in notifier  # no port, no GPU
    assert notifier["depends_on"]["redis"]["condition"] == "service_healthy"
    for name in ("api", "notifier", *WORKER_SERVICES):
        env = environment(services[name])
        assert env["VIDEOPOET_REDIS_URL"].startswith("redis://redis:6379")
        for setting in ("VIDEOPOET_WEBHOOK_URLS", "VIDEOPOET_WEBHOOK_SECRET"):
            assert setting in env, (name, setting)
