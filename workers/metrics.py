"""The workers' Prometheus metrics (each worker serves them on its own port).

Names follow what vLLM and TGI made usual: queue time, time to first token, tokens per
second, end-to-end latency. Buckets cover jobs of a fraction of a second to an hour.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# Seconds to an hour: tiny models take a second, paper-sized ones minutes.
SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)
TOKENS_PER_SECOND_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000)
# Jobs per batch: one to a large GPU batch.
BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)

QUEUE_WAIT = Histogram(
    "videopoet_queue_wait_seconds",
    "Time from a video's creation to a worker starting it.",
    ["task"],
    buckets=SECONDS_BUCKETS,
)
STAGE_SECONDS = Histogram(
    "videopoet_job_stage_seconds",
    "Time per stage of a job: inputs (decode), text, tokenize, sampling, detokenize, "
    "super_resolution, mux.",
    ["stage"],
    buckets=SECONDS_BUCKETS,
)
JOB_SECONDS = Histogram(
    "videopoet_job_seconds",
    "Time a worker spent on a job, by task and outcome.",
    ["task", "status"],
    buckets=SECONDS_BUCKETS,
)
E2E_SECONDS = Histogram(
    "videopoet_e2e_request_latency_seconds",
    "Time from a video's creation to its completion.",
    ["task"],
    buckets=SECONDS_BUCKETS,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "videopoet_time_to_first_token_seconds",
    "Time from the start of sampling to the first generated token.",
    ["task"],
    buckets=SECONDS_BUCKETS,
)
TOKENS_GENERATED = Counter(
    "videopoet_generated_tokens",
    "Tokens sampled by the language model.",
    ["task"],
)
PREFIX_TOKENS = Counter(
    "videopoet_prefix_tokens",
    "Condition (prefix) tokens fed to the language model.",
    ["task"],
)
TOKENS_PER_SECOND = Histogram(
    "videopoet_tokens_per_second",
    "Generated tokens per second of sampling, per job.",
    ["task"],
    buckets=TOKENS_PER_SECOND_BUCKETS,
)
BATCH_SIZE = Histogram(
    "videopoet_batch_size",
    "Jobs a worker took together into one batch (1: a job alone).",
    buckets=BATCH_SIZE_BUCKETS,
)
JOBS = Counter(
    "videopoet_jobs",
    "Jobs finished by a worker, by task and outcome (completed, failed, cancelled).",
    ["task", "status"],
)
FAILURES = Counter(
    "videopoet_job_failures",
    "Failed jobs by reason: timeout, generation_error, invalid_input, worker_lost.",
    ["reason"],
)
RETRIES = Counter(
    "videopoet_job_retries",
    "Jobs re-queued because the worker running them stopped (killed, crashed, lost).",
)
MODEL_LOAD_SECONDS = Histogram(
    "videopoet_model_load_seconds",
    "Time to load the pipeline when a worker starts.",
    ["model"],
    buckets=SECONDS_BUCKETS,
)
WEBHOOK_DELIVERIES = Counter(
    "videopoet_webhook_deliveries",
    "Webhook delivery attempts by outcome (the notifier's): delivered, retried (failed, tried "
    "again later), gave_up (failed, no time left), refused (the URL resolves to an address "
    "that is not allowed).",
    ["outcome"],
)
TIME_TO_FIRST_PREVIEW = Histogram(
    "videopoet_time_to_first_preview_seconds",
    "Time from a video's creation to its first published preview (created with preview).",
    ["model"],
    buckets=SECONDS_BUCKETS,
)
PREVIEWS = Counter(
    "videopoet_previews",
    "Previews published: preview.mp4 of the frames decoded so far, stored and recorded.",
    ["model"],
)
