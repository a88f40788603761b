"""Load: many clients creating and polling videos against one API process, on loopback.

    python benchmarks/load.py [--creates 500] [--clients 50] [--workers 2] [--timeout 900]
    python benchmarks/load.py --url http://127.0.0.1:8000 --key KEY   # a running server

By default it starts its own service in a temporary folder: an embedded redis-server (AOF, as
`videopoet serve` runs it) and `videopoet serve --workers N` (one API process, N workers) with
one API key per client, so the per-key limits are the defaults a real deployment has. Each
client creates its share of videos back to back (text_to_image: the cheapest job, so the
figures are the service's, not the model's), then polls them, oldest first, as often as
`openai-poll-after-ms` says. Everything stops at --timeout.

Prints accepted, rejected (by status), completed, failed, unfinished at the time cap, lost
(accepted, then unknown to the API: must be 0), 5xx responses (must be 0), transport errors,
and API latency p50/p99 (creates and polls). The last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cli.main import _free_port, start_embedded_redis  # noqa: E402 (after the sys.path line)
from core.keys import HASH_PREFIX, hash_key, is_loopback  # noqa: E402

STARTUP_SECONDS = 300.0  # workers load the model (slow on shared cores)
FINISHED = frozenset({"completed", "failed", "cancelled"})


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    statuses: collections.Counter = field(default_factory=collections.Counter)
    rejected: collections.Counter = field(default_factory=collections.Counter)
    transport_errors: int = 0
    accepted: list[str] = field(default_factory=list)
    outcome: dict[str, str] = field(default_factory=dict)  # video id -> status, or "lost"

    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def request(
    http: httpx.AsyncClient, tally: Tally, kind: str, method: str, path: str, **kwargs
) -> httpx.Response | None:
    started = time.perf_counter()
    try:
        response = await http.request(method, path, **kwargs)
    except httpx.HTTPError:
        tally.transport_errors += 1
        return None
    tally.latencies[kind].append(time.perf_counter() - started)
    tally.statuses[response.status_code] += 1
    return response


async def client(
    url: str, key: str, creates: int, index: int, tally: Tally, deadline: float
) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
        mine: list[str] = []
        for i in range(creates):
            if time.monotonic() > deadline:
                return
            body = {"prompt": f"load {index}.{i}", "task": "text_to_image", "seed": i}
            response = await request(http, tally, "create", "POST", "/v1/videos", json=body)
            if response is None:
                continue
            if response.status_code == 200:
                mine.append(response.json()["id"])
                tally.accepted.append(mine[-1])
            else:
                tally.rejected[response.status_code] += 1
                retry = response.headers.get("retry-after")
                if retry and retry.isdigit():
                    await asyncio.sleep(min(float(retry), 30.0))
        for video_id in mine:  # oldest first: they finish roughly in order
            while time.monotonic() < deadline:
                response = await request(http, tally, "poll", "GET", f"/v1/videos/{video_id}")
                if response is not None and response.status_code == 404:
                    tally.outcome[video_id] = "lost"
                    break
                if response is not None and response.status_code == 200:
                    status = response.json()["status"]
                    if status in FINISHED:
                        tally.outcome[video_id] = status
                        break
                    wait = int(response.headers.get("openai-poll-after-ms", "1000")) / 1000
                elif response is not None and response.headers.get("retry-after", "").isdigit():
                    wait = float(response.headers["retry-after"])
                else:
                    wait = 1.0
                await asyncio.sleep(wait)


async def run_load(url: str, keys: list[str], creates: int, timeout: float) -> Tally:
    tally = Tally()
    deadline = time.monotonic() + timeout
    shares = [creates // len(keys) + (i < creates % len(keys)) for i in range(len(keys))]
    await asyncio.gather(
        *(client(url, key, n, i, tally, deadline) for i, (key, n) in enumerate(zip(keys, shares)))
    )
    return tally


class OwnService:
    """Embedded Redis + `videopoet serve --workers N` on loopback, in a temporary folder."""

    def __init__(self, workers: int, model: str, keys: list[str]):
        self.folder = Path(tempfile.mkdtemp(prefix="videopoet-load-"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("VIDEOPOET_")}
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env.update(
            {
                "VIDEOPOET_DATA_DIR": str(self.folder / "data"),
                "VIDEOPOET_MODEL": model,
                "VIDEOPOET_API_KEYS": ",".join(HASH_PREFIX + hash_key(k) for k in keys),
                "VIDEOPOET_WORKER_METRICS_PORT": str(_free_port()),
                "VIDEOPOET_LOG_LEVEL": "WARNING",
                "PYTHONPATH": str(ROOT),
            }
        )
        self.redis, redis_url = start_embedded_redis(self.folder / "redis", self.env)
        self.env["VIDEOPOET_REDIS_URL"] = redis_url
        self.log = self.folder / "serve.log"
        self.serve = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve", "--workers", str(workers)]
            + ["--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env,
            cwd=ROOT,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, key: str, workers: int) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.serve.poll() is not None:
                raise RuntimeError(f"`videopoet serve` exited; see {self.log}")
            try:
                ready = httpx.get(self.url + "/readyz", timeout=5)
                if ready.status_code == 200 and ready.json()["workers"] >= workers:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1.0)
        raise TimeoutError(f"the service was not ready in {STARTUP_SECONDS:g} s; see {self.log}")

    def stop(self) -> None:
        if self.serve.poll() is None:
            self.serve.send_signal(signal.SIGTERM)
            try:
                self.serve.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.serve.kill()
                self.serve.wait()
        if self.redis.poll() is None:
            self.redis.terminate()
            self.redis.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--creates", "--jobs", type=int, default=500, dest="creates")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2, help="workers of the own service")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--timeout", type=float, default=900.0, help="cap on the whole run (s)")
    parser.add_argument("--url", help="a running server (loopback only) instead of our own")
    parser.add_argument("--key", default="", help="API key for --url (all clients share it)")
    args = parser.parse_args()

    own = None
    if args.url:
        host = urlparse(args.url).hostname or ""
        if not is_loopback(host):
            parser.error(f"--url must be a loopback address (load stays on this machine): {host}")
        url, keys = args.url.rstrip("/"), [args.key] * args.clients
    else:
        keys = [f"vp-load-{i}" for i in range(args.clients)]
        own = OwnService(args.workers, args.model, keys)
        url = own.url
    load_before = os.getloadavg()
    started = time.monotonic()
    try:
        if own is not None:
            own.wait_ready(keys[0], args.workers)
            print(f"service ready on {url} ({args.workers} workers, {args.model})", flush=True)
        started = time.monotonic()
        tally = asyncio.run(run_load(url, keys, args.creates, args.timeout))
    finally:
        if own is not None:
            own.stop()
    seconds = time.monotonic() - started
    outcome = collections.Counter(tally.outcome.values())
    accepted = len(tally.accepted)
    unfinished = accepted - len(tally.outcome)
    everything = tally.latencies["create"] + tally.latencies["poll"]

    def ms(seconds: float | None) -> float | None:
        return None if seconds is None else round(seconds * 1000, 1)

    row = {
        "creates": args.creates,
        "clients": args.clients,
        "workers": args.workers if own else None,
        "model": args.model if own else None,
        "seconds": round(seconds, 1),
        "accepted": accepted,
        "rejected": dict(tally.rejected),
        "completed": outcome["completed"],
        "failed": outcome["failed"],
        "unfinished": unfinished,
        "lost": outcome["lost"],
        "server_errors_5xx": tally.server_errors(),
        "transport_errors": tally.transport_errors,
        "requests": sum(tally.statuses.values()),
        "api_p50_ms": ms(percentile(everything, 50)),
        "api_p99_ms": ms(percentile(everything, 99)),
        "create_p50_ms": ms(percentile(tally.latencies["create"], 50)),
        "create_p99_ms": ms(percentile(tally.latencies["create"], 99)),
        "poll_p50_ms": ms(percentile(tally.latencies["poll"], 50)),
        "poll_p99_ms": ms(percentile(tally.latencies["poll"], 99)),
        "jobs_per_second": round(outcome["completed"] / seconds, 2) if seconds else None,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(
        f"accepted {accepted}/{args.creates} (rejected {dict(tally.rejected) or 0}), "
        f"completed {row['completed']}, failed {row['failed']}, unfinished {unfinished} "
        f"at the {args.timeout:g} s cap, lost {row['lost']}"
    )
    print(
        f"5xx {row['server_errors_5xx']}, transport errors {tally.transport_errors}, "
        f"{row['requests']} requests in {row['seconds']} s"
    )
    print(
        f"API latency p50 {row['api_p50_ms']} ms, p99 {row['api_p99_ms']} ms "
        f"(create p50 {row['create_p50_ms']} / p99 {row['create_p99_ms']} ms; "
        f"poll p50 {row['poll_p50_ms']} / p99 {row['poll_p99_ms']} ms)"
    )
    print(json.dumps(row))
    return 0 if row["lost"] == 0 and row["server_errors_5xx"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
