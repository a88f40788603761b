"""Settings of the service, read from the environment (`VIDEOPOET_*`) by the API, the workers
and the CLI alike. Torch-free: the API process imports this."""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.card import resolve_checkpoint

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

logger = logging.getLogger(__name__)


def default_model() -> str:
    """The shipped demo checkpoint when it is installed, else (loudly) the random-init `tiny`."""
    if resolve_checkpoint("demo") is not None:
        return "demo"
    logger.warning(
        "the demo checkpoint is not installed (models/checkpoints/demo is missing): serving "
        "the random-init 'tiny' preset, which draws noise. Install videopoet-server from its "
        "wheel or a source checkout (both ship it), or set VIDEOPOET_MODEL to a checkpoint folder."
    )
    return "tiny"


class Settings(BaseSettings):
    """Every `VIDEOPOET_*` setting. The README's table lists the same names."""

    # hide_input_in_errors: an error must not print VIDEOPOET_API_KEYS back.
    model_config = SettingsConfigDict(
        env_prefix="VIDEOPOET_", extra="ignore", hide_input_in_errors=True
    )

    # Served model: a preset name (tiny, demo, videopoet-1b, videopoet-8b) or a checkpoint folder.
    model: str = Field(default_factory=default_model)
    # Torch device for workers: "auto" picks cuda when available, else cpu.
    device: str = "auto"
    # Intra-op CPU threads of each worker's torch; 0: torch's default (one per core). Where the
    # cores are shared (other work, several workers), give each worker its share: threads
    # that wait on a descheduled sibling make every op many times slower.
    torch_threads: int = Field(default=0, ge=0)
    # LM weights' dtype: "auto" is bfloat16 on CUDA and float32 on CPU.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # Compile the fixed-shape decode step (torch.compile; CUDA graphs on CUDA). The first job of
    # each batch size pays the compile (tens of seconds); later ones decode faster.
    compile: bool = False
    # LM weights kept as int8 with a scale per row (models/quantize.py): a quarter of float32's
    # bytes, half of bfloat16's. Pays on a GPU with VIDEOPOET_COMPILE=1; slower on a CPU.
    quantize: Literal["none", "int8"] = "none"
    # External Redis. Unset: `videopoet serve` starts an embedded redis-server and points its
    # children here; `videopoet api` / `worker` alone fall back to DEFAULT_REDIS_URL.
    redis_url: str | None = None
    # Root of everything written on disk: embedded Redis data, artifacts, metrics files.
    data_dir: Path = Path("data")
    # Inputs and outputs of each video, one folder per id. Every worker must reach it.
    artifact_dir: Path | None = None
    # Object storage instead of the folder: s3://BUCKET/PREFIX (core/artifacts.py). Credentials
    # come from boto3's chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, a role),
    # never from here. Unset: the folder above.
    artifact_url: str | None = None
    # The S3-compatible server (SeaweedFS, MinIO, ...); unset: AWS S3.
    s3_endpoint_url: str | None = None
    # Downloads answer 302 to a presigned URL of the object instead of streaming it through
    # the API (clients must reach the endpoint).
    s3_presign: bool = False
    # How long a presigned download URL works.
    s3_presign_seconds: int = Field(default=900, ge=1, le=7 * 24 * 3600)
    host: str = "127.0.0.1"
    port: int = 8000
    # Uploads larger than this are refused with 413.
    max_upload_bytes: int = 100 * 1024 * 1024
    # Input videos and audio longer than this are refused (422).
    max_input_seconds: float = 120.0
    # Input images and videos wider or taller than this are refused (422); ffmpeg is told
    # to decode no picture of more than this squared pixels (decompression bombs).
    max_input_side: int = 4096
    # Input videos above this frame rate are refused (422).
    max_input_fps: float = 120.0
    # Input videos with more frames than this (duration x frame rate) are refused (422).
    max_input_frames: int = 7200
    # API keys, comma-separated: each a key or its hash, "sha256:<64 hex>" (keep hashes in
    # config files). Unset: no auth, allowed only on a loopback host.
    api_keys: str | None = None
    # Requests per minute per API key on /v1 (429 past it, with Retry-After); 0: no limit.
    rate_limit_per_minute: int = 600
    # Creates per minute per API key (within the above); 0: no limit.
    create_rate_limit_per_minute: int = 60
    # Videos queued or in progress at once per API key (429 past it); 0: no limit.
    max_active_jobs_per_key: int = 32
    # Jobs waiting in the queue past which creates get 503 with Retry-After; 0: no limit.
    max_queue_length: int = 1000
    # A job running longer than this fails with a timeout error; the worker goes on.
    job_timeout_seconds: int = 1800
    # Outputs (and the record) are deleted this long after a video finishes.
    retention_seconds: int = 24 * 3600
    # How often the API sweeps expired videos.
    cleanup_interval_seconds: float = 60.0
    # Limit for each ffmpeg run (probe, decode, encode).
    ffmpeg_timeout_seconds: float = 120.0
    # The ffmpeg binary is VIDEOPOET_FFMPEG (unset: imageio-ffmpeg's). The media layer reads it
    # (models/media.py: ffmpeg_exe), so that training, which has no Settings, uses it too.
    # Worker metrics: worker i of `serve` listens on this port + i; 0 turns it off.
    worker_metrics_port: int = 9101
    # Address worker metrics listen on (0.0.0.0 to let another machine's Prometheus scrape).
    worker_metrics_host: str = "127.0.0.1"
    # How often a running job's worker heartbeats.
    heartbeat_seconds: int = 2
    # A job whose worker has been silent this long is taken as abandoned and re-run.
    worker_lost_seconds: int = 15
    # How often idle workers look for abandoned jobs (and workers that died).
    maintenance_interval_seconds: int = 10
    # Re-runs of a job whose worker died (SIGKILL, OOM, lost machine) before giving up.
    max_retries: int = 2
    # Most jobs a worker samples together in one batch (compatible ones: same task and token
    # shape); 1 runs one job at a time.
    batch_size: int = Field(default=8, ge=1)
    # A worker fills a batch until no compatible job was queued for this long: a burst of
    # requests (the API queues one every few ms) makes one batch; a lone request waits this
    # long at most.
    batch_window_seconds: float = Field(default=0.05, ge=0.0)
    # How a worker batches (docs/architecture.md "How a worker runs jobs"): "continuous" lets
    # compatible queued jobs join the running batch between two decode steps and lets finished
    # ones leave (up to batch_size rows); "static" gathers a batch within the window and runs
    # it to its end. Jobs that take several sampling passes (long video, continuation,
    # soundtrack) run in static batches either way.
    scheduler: Literal["continuous", "static"] = "continuous"
    # "module:function" returning a pipeline (tests, custom stacks); unset: models.load_pipeline.
    pipeline_factory: str | None = None
    # `openai-poll-after-ms` header on retrieve: how long clients should wait between polls.
    poll_after_ms: int = 1000
    log_level: str = "INFO"
    # `videopoet serve`: how long children get to stop (a worker finishes its job) before SIGKILL.
    shutdown_grace_seconds: float = 60.0
    # Webhooks (core/webhooks.py): endpoints, comma-separated, that get every video.completed,
    # video.failed and video.cancelled event (besides a create's own `webhook_url`). Give the
    # webhook settings to every process: the API and the workers queue events, the notifier
    # (`videopoet notifier`, started by `serve`) signs and sends them.
    webhook_urls: str | None = None
    # The signing secret, "whsec_<base64 of 24 to 64 random bytes>" (Standard Webhooks; what
    # the openai SDK's `client.webhooks.unwrap(..., secret=)` takes). Unset: webhooks are off.
    webhook_secret: SecretStr | None = None
    # Allow webhook URLs that resolve to loopback, private, link-local or reserved addresses
    # (refused with 422 otherwise, and again at delivery).
    webhook_allow_private: bool = False
    # Each delivery attempt gets this long to connect and answer; redirects are not followed.
    webhook_timeout_seconds: float = Field(default=10.0, gt=0.0, le=300.0)
    # The first retry of a failed delivery waits this long; each next one twice as long (at
    # most an hour) ...
    webhook_backoff_seconds: int = Field(default=5, ge=1)
    # ... until the waits add up to this much; then the delivery is given up.
    webhook_retry_seconds: int = Field(default=24 * 3600, ge=0)

    @field_validator("webhook_secret")
    @classmethod
    def _check_webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        from core.webhooks import parse_secret

        parse_secret(value.get_secret_value())  # names the form, never the value
        return SecretStr(value.get_secret_value().strip())

    @field_validator("webhook_urls")
    @classmethod
    def _check_webhook_urls(cls, value: str | None) -> str | None:
        from core.webhooks import parse_urls

        return ",".join(parse_urls(value)) or None

    @model_validator(mode="after")
    def _webhooks_need_a_secret(self) -> Settings:
        if self.webhook_urls and self.webhook_secret is None:
            raise ValueError(
                "VIDEOPOET_WEBHOOK_URLS is set but VIDEOPOET_WEBHOOK_SECRET is not: events are "
                "signed, so set a secret (whsec_<base64>)"
            )
        return self

    @field_validator("api_keys")
    @classmethod
    def _check_api_keys(cls, value: str | None) -> str | None:
        from core.keys import parse_api_keys

        parse_api_keys(value)  # a malformed hash fails at start, not at the first request
        return value

    @field_validator("artifact_url")
    @classmethod
    def _check_artifact_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from core.artifacts import parse_s3_url

        parse_s3_url(value)  # a malformed URL fails at start, naming the accepted form
        return value.strip()

    @field_validator("s3_endpoint_url")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.strip().startswith(("http://", "https://")):
            raise ValueError("VIDEOPOET_S3_ENDPOINT_URL must be an http:// or https:// URL")
        return value.strip()

    @property
    def artifacts(self) -> Path:
        return self.artifact_dir if self.artifact_dir is not None else self.data_dir / "artifacts"

    @property
    def redis(self) -> str:
        return self.redis_url or DEFAULT_REDIS_URL


@lru_cache
def get_settings() -> Settings:
    return Settings()


def multiprocess_metrics_dir() -> str | None:
    """The folder prometheus_client shares across processes, when set."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
