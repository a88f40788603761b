"""/metrics (API, all processes) and each worker's own port parse with prometheus_client and
carry the families an operator needs."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from core.store import VideoStatus
from tests.conftest import Service

WORKER_FAMILIES = {
    "videopoet_queue_wait_seconds": "histogram",
    "videopoet_job_stage_seconds": "histogram",
    "videopoet_job_seconds": "histogram",
    "videopoet_e2e_request_latency_seconds": "histogram",
    "videopoet_time_to_first_token_seconds": "histogram",
    "videopoet_generated_tokens": "counter",
    "videopoet_tokens_per_second": "histogram",
    "videopoet_job_failures": "counter",
    "videopoet_model_load_seconds": "histogram",
    "videopoet_batch_size": "histogram",
}
API_FAMILIES = {
    "videopoet_requests": "counter",
    "videopoet_queue_depth": "gauge",
    "videopoet_jobs_running": "gauge",
    "videopoet_workers_live": "gauge",
}


def _families(text: str) -> dict:
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_metrics_parse_and_carry_the_families(service: Service) -> None:
    worker = service.workers.alive()[0]
    service.workers.wait_ready(worker, timeout=15)  # its beacon, for videopoet_workers_live
    ok = service.http.post("/v1/videos", json={"prompt": "x", "task": "text_to_image"}).json()
    bad = service.http.post(
        "/v1/videos", json={"prompt": "[raise] x", "task": "text_to_image"}
    ).json()
    assert service.http.post("/v1/videos", json={"prompt": "x", "size": "1x1"}).status_code == 422
    assert service.wait_status(ok["id"], {VideoStatus.completed}).status is VideoStatus.completed
    assert service.wait_status(bad["id"], {VideoStatus.failed}).status is VideoStatus.failed

    response = service.http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    api = _families(response.text)
    for name, kind in {**API_FAMILIES, **WORKER_FAMILIES}.items():
        assert name in api and api[name].type == kind, name

    requests = {
        (s.labels["endpoint"], s.labels["task"], s.labels["status"]): s.value
        for s in api["videopoet_requests"].samples
        if s.name == "videopoet_requests_total"
    }
    assert requests[("create", "text_to_image", "200")] >= 2
    assert requests[("create", "unknown", "422")] >= 1
    stages = {s.labels["stage"] for s in api["videopoet_job_stage_seconds"].samples}
    assert {"inputs", "text", "sampling", "detokenize", "mux"} <= stages
    failures = {s.labels["reason"] for s in api["videopoet_job_failures"].samples}
    assert "generation_error" in failures
    assert api["videopoet_workers_live"].samples[0].value >= 1
    buckets = [
        s.labels["le"] for s in api["videopoet_job_seconds"].samples if s.name.endswith("_bucket")
    ]
    assert "0.5" in buckets and "600.0" in buckets  # seconds to minutes

    # Each worker serves its own figures too (what a Prometheus on another machine scrapes).
    port = service.workers.metrics_ports[worker]
    own = _families(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
    assert {"videopoet_model_load_seconds", "videopoet_job_stage_seconds"} <= set(own)
