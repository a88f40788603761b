"""The API's Prometheus metrics and the /metrics rendering.

Correct across API worker processes: with `PROMETHEUS_MULTIPROC_DIR` set (``videopoet api
--processes N`` and ``videopoet serve`` set it), every process writes its values there and
/metrics aggregates them, including the values of workers on this machine that share the
folder. Queue depth and live workers are read from Redis at scrape time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from redis.exceptions import RedisError

from core.config import multiprocess_metrics_dir
from core.queue import JobQueue

logger = logging.getLogger(__name__)

REQUESTS = Counter(
    "videopoet_requests",
    "Video creation requests by endpoint, task and HTTP status.",
    ["endpoint", "task", "status"],
)


class QueueCollector:
    """Queue depth, running jobs and live workers, read from Redis on each scrape."""

    def __init__(self, queue: JobQueue):
        self.queue = queue

    def collect(self) -> Iterator[Metric]:
        try:
            values = (self.queue.depth(), self.queue.running(), self.queue.live_workers())
        except RedisError:
            logger.warning("metrics: Redis unreachable, queue gauges left out")
            return
        labels = [self.queue.name]
        depth = GaugeMetricFamily(
            "videopoet_queue_depth", "Jobs waiting in the queue.", labels=["queue"]
        )
        depth.add_metric(labels, values[0])
        running = GaugeMetricFamily(
            "videopoet_jobs_running", "Jobs being run by a worker.", labels=["queue"]
        )
        running.add_metric(labels, values[1])
        workers = GaugeMetricFamily(
            "videopoet_workers_live", "Workers that reported recently.", labels=["queue"]
        )
        workers.add_metric(labels, values[2])
        yield from (depth, running, workers)


class _ProcessCollector:
    """This process's own registry, for when there is no multiprocess folder."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def render(queue: JobQueue) -> bytes:
    """The text exposition of every family: this process (or all of them) plus the queue."""
    registry = CollectorRegistry()
    if multiprocess_metrics_dir():
        MultiProcessCollector(registry)
    else:
        registry.register(_ProcessCollector())
    registry.register(QueueCollector(queue))
    return generate_latest(registry)
