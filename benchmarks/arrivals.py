"""Latency under Poisson arrivals, one scheduler against the other, and throughput at saturation.

    .venv/bin/python benchmarks/arrivals.py [--schedulers static,continuous] [--model demo]
                                            [--seconds 60] [--loads 0.5,0.8]
                                            [--saturation-requests 24] [--solo 3]
                                            [--task text_to_video] [--seed 0] [--no-preview]
    .venv/bin/python benchmarks/arrivals.py --smoke     # tiny model, a few requests a phase

For each scheduler, one after the other, it starts its own service on loopback (embedded
Redis, the API and ONE worker, VIDEOPOET_SCHEDULER=<scheduler>, VIDEOPOET_TORCH_THREADS=1,
the default batch size and window, no rate limits; see benchmarks/service.py) and runs:

  warm-up      one request, not counted (first-call costs)
  solo         --solo requests one at a time, each alone in the service
  saturation   --saturation-requests sent at once; videos/min = completed / (first create
               sent -> last completion seen)
  loads        for each --loads fraction, Poisson arrivals at that fraction of the capacity
               for --seconds, then waits until every video has finished

The capacity is the STATIC scheduler's saturation videos/min (measured first), so every
scheduler gets the same arrival rates and, from the same --seed, the same arrival times,
prompts (the demo's vocabulary: "a red circle moves left") and seeds: their latencies compare
at equal load. --capacity VIDEOS_PER_MIN skips that measurement.

Every video is followed on its own SSE stream (GET /v1/videos/{id}/events, opened as soon as
its create returns; no polling): latency is create sent -> the `video` event with a terminal
status, time to first preview is create sent -> the first `preview` event. Creates ask for
previews ("preview": true) unless --no-preview; a service that refuses the field (422) is
asked again without it, and the preview figures are null. The API looks at a record every
0.1 s for each event stream, so both figures carry up to that much of its granularity (and
each open stream costs the API that look). Failed,
rejected and unfinished videos are counted and printed, never dropped silently.

Prints, per scheduler, the solo latency, the saturation videos/min and, per load, latency
p50/p90/p99, time to first preview (mean, p50), completed/failed counts and the achieved
arrival rate. The last line is JSON: per-scheduler figures, and at the highest load of --loads
(80 % by default) `p99_ratio` (continuous p99 / static p99), `throughput_ratio` (continuous /
static saturation videos/min) and `first_preview_ratio` (continuous median time to first
preview at that load / its solo median latency); a ratio whose two sides were not both
measured is null.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

import httpx
from service import machine, pick_model, running_service

from core.config import Settings

SCHEDULERS = ("static", "continuous")
TERMINAL = frozenset({"completed", "failed", "cancelled"})
# The demo world's words (models/shapes_av.py), so the prompts are ones the demo knows.
COLOURS = ("red", "yellow", "green", "cyan", "blue", "magenta")
SHAPES = ("circle", "square", "triangle")
MOTIONS = ("moves left", "moves right", "moves up", "moves down", "stays still")
# The benchmark is the only client: no per-key limit may shape its arrivals.
UNLIMITED = {
    "VIDEOPOET_RATE_LIMIT_PER_MINUTE": "0",
    "VIDEOPOET_CREATE_RATE_LIMIT_PER_MINUTE": "0",
    "VIDEOPOET_MAX_ACTIVE_JOBS_PER_KEY": "0",
    "VIDEOPOET_MAX_QUEUE_LENGTH": "0",
}
STREAM_READ_SECONDS = 60.0  # the API sends a keep-alive every 15 s on a quiet stream
RECONNECTS = 5  # a dropped stream is resumed with Last-Event-ID this many times


def prompt(seed: int) -> str:
    rng = random.Random(seed)
    size = rng.choice(("", "small ", "large "))
    return f"a {size}{rng.choice(COLOURS)} {rng.choice(SHAPES)} {rng.choice(MOTIONS)}"


def percentile(values: list[float], q: float) -> float | None:
    """Nearest rank: the smallest value with at least q % of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


@dataclass
class Outcome:
    """One request: when its create was sent and what its event stream said."""

    seed: int
    sent: float  # perf_counter() when the create was sent
    video_id: str | None = None
    # completed / failed / cancelled (the video's), or the client's: rejected (the create
    # was refused), deleted, lost (its stream ended, or errored, without a terminal status),
    # unfinished (still going at the timeout)
    status: str = "unfinished"
    error: str | None = None
    latency: float | None = None  # create sent -> terminal event
    first_preview: float | None = None  # create sent -> first `preview` event
    previews: int = 0

    @property
    def finished_at(self) -> float | None:
        return None if self.latency is None else self.sent + self.latency


class Client:
    """Creates videos and follows each on its own SSE stream."""

    def __init__(
        self, url: str, task: str, preview: bool, transport: httpx.AsyncBaseTransport | None = None
    ):
        self.task = task
        self.preview = preview  # send "preview": true
        self.preview_refused = False  # the service answered 422 naming the field
        self.http = httpx.AsyncClient(
            base_url=url,
            timeout=httpx.Timeout(60.0, read=STREAM_READ_SECONDS),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            transport=transport,
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def video(self, seed: int, timeout: float) -> Outcome:
        outcome = Outcome(seed, time.perf_counter())
        try:
            await asyncio.wait_for(self._run(outcome), timeout)
        except asyncio.TimeoutError:
            outcome.status, outcome.error = "unfinished", f"not finished after {timeout:g} s"
        return outcome

    async def _run(self, outcome: Outcome) -> None:
        body: dict[str, Any] = {"task": self.task, "prompt": prompt(outcome.seed)}
        body["seed"] = outcome.seed
        if self.preview:
            body["preview"] = True
        try:
            response = await self.http.post("/v1/videos", json=body)
            if response.status_code == 422 and "preview" in body and _names(response, "preview"):
                self.preview, self.preview_refused = False, True
                del body["preview"]
                response = await self.http.post("/v1/videos", json=body)
        except httpx.HTTPError as exc:
            outcome.status, outcome.error = "rejected", f"create: {exc!r}"
            return
        if response.status_code != 200:
            outcome.status = "rejected"
            outcome.error = f"create: {response.status_code} {response.text[:300]}"
            return
        outcome.video_id = response.json()["id"]
        await self._follow(outcome)

    async def _follow(self, outcome: Outcome) -> None:
        path = f"/v1/videos/{outcome.video_id}/events"
        last_id: str | None = None
        for _ in range(RECONNECTS + 1):
            headers = {"Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            try:
                async with self.http.stream("GET", path, headers=headers) as response:
                    if response.status_code != 200:
                        await response.aread()
                        outcome.status = "lost"
                        outcome.error = f"events: {response.status_code} {response.text[:300]}"
                        return
                    event, data = "message", []
                    async for line in response.aiter_lines():
                        if line == "":  # the end of one event
                            if data and self._event(outcome, event, "\n".join(data)):
                                return
                            event, data = "message", []
                        elif line.startswith(":"):  # a comment: keep-alive
                            continue
                        else:
                            name, _, value = line.partition(":")
                            value = value[1:] if value.startswith(" ") else value
                            if name == "event":
                                event = value
                            elif name == "data":
                                data.append(value)
                            elif name == "id":
                                last_id = value
                outcome.error = "the event stream ended before a terminal status"
            except httpx.TransportError as exc:
                outcome.error = f"events: {exc!r}"
        outcome.status = "lost"

    @staticmethod
    def _event(outcome: Outcome, event: str, data: str) -> bool:
        """Take one event; True once the video has finished (or is gone)."""
        now = time.perf_counter()
        if event == "preview":
            outcome.previews += 1
            if outcome.first_preview is None:
                outcome.first_preview = now - outcome.sent
        elif event == "video":
            video = json.loads(data)
            if video.get("status") in TERMINAL:
                outcome.status, outcome.latency = video["status"], now - outcome.sent
                error = video.get("error")
                outcome.error = json.dumps(error) if error else None
                return True
        elif event == "deleted":
            outcome.status, outcome.error = "deleted", data
            return True
        return False


def _names(response: httpx.Response, field: str) -> bool:
    try:
        error = response.json().get("error") or {}
    except ValueError:
        return False
    return error.get("param") == field or repr(field) in str(error.get("message", ""))


def summary(outcomes: list[Outcome]) -> dict[str, Any]:
    """Counts by status, latency and time-to-first-preview figures of the completed ones."""
    completed = [o for o in outcomes if o.status == "completed"]
    latencies = [o.latency for o in completed if o.latency is not None]
    previews = [o.first_preview for o in completed if o.first_preview is not None]
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    return {
        "requests": len(outcomes),
        "completed": len(completed),
        "not_completed": {k: v for k, v in counts.items() if k != "completed"},
        "errors": sorted({o.error for o in outcomes if o.status != "completed" and o.error})[:5],
        "latency_p50_s": rounded(percentile(latencies, 50)),
        "latency_p90_s": rounded(percentile(latencies, 90)),
        "latency_p99_s": rounded(percentile(latencies, 99)),
        "latency_mean_s": rounded(statistics.fmean(latencies) if latencies else None),
        "first_preview_mean_s": rounded(statistics.fmean(previews) if previews else None),
        "first_preview_p50_s": rounded(percentile(previews, 50)),
        "with_preview": len(previews),
    }


async def solo(client: Client, seeds: list[int], timeout: float) -> dict[str, Any]:
    return summary([await client.video(seed, timeout) for seed in seeds])


async def saturation(client: Client, seeds: list[int], timeout: float) -> dict[str, Any]:
    outcomes = await asyncio.gather(*(client.video(seed, timeout) for seed in seeds))
    row = summary(outcomes)
    ends = [o.finished_at for o in outcomes if o.status == "completed" and o.finished_at]
    seconds = max(ends) - min(o.sent for o in outcomes) if ends else None
    row["seconds"] = rounded(seconds, 2)
    row["videos_per_min"] = rounded(len(ends) / seconds * 60 if seconds else None, 2)
    return row


def arrival_times(rate_per_s: float, seconds: float, seed: int, minimum: int) -> list[float]:
    """Poisson arrivals: exponential gaps from a fixed seed, over `seconds` (at least
    `minimum` of them, past the window if it takes that)."""
    rng = random.Random(seed)
    times: list[float] = []
    t = rng.expovariate(rate_per_s)
    while t <= seconds or len(times) < minimum:
        times.append(t)
        t += rng.expovariate(rate_per_s)
    return times


async def poisson(
    client: Client, times: list[float], seeds: list[int], seconds: float, timeout: float
) -> dict[str, Any]:
    start = time.perf_counter()
    tasks, lags = [], []
    for at, seed in zip(times, seeds):
        await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
        lags.append(time.perf_counter() - start - at)
        tasks.append(asyncio.create_task(client.video(seed, timeout)))
    outcomes = await asyncio.gather(*tasks)
    window = max(seconds, times[-1] if times else 0.0)
    row = summary(outcomes)
    row["achieved_per_min"] = rounded(len(times) / window * 60, 2)
    row["send_lag_max_s"] = rounded(max(lags, default=0.0))  # the client kept to the schedule
    row["seconds"] = rounded(time.perf_counter() - start, 2)
    return row


def phase_seeds(base: int, phase: int, count: int) -> list[int]:
    """The request seeds of one phase: the same in every scheduler's run, distinct overall."""
    return [base * 1_000_000 + phase * 10_000 + i for i in range(count)]


async def measure(
    url: str, args: argparse.Namespace, capacity: float | None
) -> tuple[dict[str, Any], float]:
    """One scheduler's service: warm-up, solo, saturation, then the loads. Returns its
    figures and the capacity the loads used (its own saturation when none was given)."""
    client = Client(url, args.task, args.preview)
    try:
        warm = await client.video(phase_seeds(args.seed, 0, 1)[0], args.timeout)
        if warm.status != "completed":
            raise RuntimeError(f"the warm-up request ended {warm.status}: {warm.error}")
        row: dict[str, Any] = {}
        row["solo"] = await solo(client, phase_seeds(args.seed, 1, args.solo), args.timeout)
        row["saturation"] = await saturation(
            client, phase_seeds(args.seed, 2, args.saturation_requests), args.timeout
        )
        own = row["saturation"]["videos_per_min"]
        if capacity is None:
            if not own:
                raise RuntimeError("no video completed at saturation: no capacity to load at")
            capacity = own
        row["loads"] = {}
        for i, load in enumerate(args.loads):
            rate = load * capacity / 60
            times = arrival_times(rate, args.seconds, args.seed * 1000 + i, args.min_arrivals)
            seeds = phase_seeds(args.seed, 3 + i, len(times))
            result = await poisson(client, times, seeds, args.seconds, args.timeout)
            row["loads"][str(load)] = {"load": load, "offered_per_min": round(rate * 60, 2)}
            row["loads"][str(load)].update(result)
        row["preview_refused"] = client.preview_refused
        return row, capacity
    finally:
        await client.close()


def loads_list(text: str) -> list[float]:
    values = [float(v) for v in text.split(",") if v.strip()]
    if not values or any(not 0 < v <= 2 for v in values):
        raise argparse.ArgumentTypeError("fractions of the capacity in (0, 2], e.g. 0.5,0.8")
    return values


def schedulers_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in SCHEDULERS]
    if not names or unknown or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"a comma-separated subset of {', '.join(SCHEDULERS)}")
    return sorted(names, key=SCHEDULERS.index)  # static first: its capacity sets the loads


def print_scheduler(name: str, row: dict[str, Any]) -> None:
    s, sat = row["solo"], row["saturation"]
    print(
        f"{name}: solo latency p50 {s['latency_p50_s']} s ({s['completed']}/{s['requests']}), "
        f"first preview p50 {s['first_preview_p50_s']} s"
    )
    print(
        f"{name}: saturation {sat['completed']}/{sat['requests']} completed in {sat['seconds']} s:"
        f" {sat['videos_per_min']} videos/min; not completed {sat['not_completed'] or 0}"
    )
    for load in row["loads"].values():
        print(
            f"{name} at {load['load']:.0%} load: {load['requests']} sent, "
            f"{load['achieved_per_min']}/min ({load['offered_per_min']}/min offered); "
            f"latency p50 {load['latency_p50_s']} p90 {load['latency_p90_s']} "
            f"p99 {load['latency_p99_s']} s; first preview mean {load['first_preview_mean_s']} "
            f"p50 {load['first_preview_p50_s']} s; completed {load['completed']}, "
            f"not completed {load['not_completed'] or 0}"
        )
    for phase in (s, sat, *row["loads"].values()):
        for error in phase["errors"]:
            print(f"{name}: error: {error}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--schedulers", type=schedulers_list, default=list(SCHEDULERS), help="static,continuous"
    )
    parser.add_argument("--model", help="preset or checkpoint (default: demo if shipped)")
    parser.add_argument(
        "--task", default="text_to_video", choices=["text_to_video", "text_to_image"]
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="arrivals per load level")
    parser.add_argument("--loads", type=loads_list, default=[0.5, 0.8], help="e.g. 0.5,0.8")
    parser.add_argument("--saturation-requests", type=int, default=24, metavar="N")
    parser.add_argument("--solo", type=int, default=3, help="solo requests, one at a time")
    parser.add_argument("--capacity", type=float, help="videos/min the loads are fractions of")
    parser.add_argument("--seed", type=int, default=0, help="arrival times, prompts, seeds")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per video")
    parser.add_argument(
        "--no-preview", dest="preview", action="store_false", help='do not send "preview": true'
    )
    parser.add_argument("--smoke", action="store_true", help="tiny model, a few requests")
    args = parser.parse_args()
    args.min_arrivals = 1
    if args.smoke:
        args.model = args.model or "tiny"
        args.seconds, args.saturation_requests, args.solo = 1.0, 4, 1
        args.min_arrivals, args.timeout = 3, min(args.timeout, 120.0)
    if args.saturation_requests < 1 or args.solo < 1:
        parser.error("--saturation-requests and --solo must be at least 1")
    if "continuous" in args.schedulers and "scheduler" not in Settings.model_fields:
        parser.error(
            "this tree's workers have no VIDEOPOET_SCHEDULER (core.config.Settings.scheduler): "
            "`continuous` would run the static scheduler; use --schedulers static"
        )
    model = pick_model(args.model)
    batch_size = Settings.model_fields["batch_size"].default

    print(
        f"model {model}, {args.task}, one worker (1 torch thread, batch size {batch_size}), "
        f"schedulers {','.join(args.schedulers)}; machine {machine()}",
        flush=True,
    )
    capacity = args.capacity
    capacity_from = "--capacity" if capacity else None
    rows: dict[str, dict[str, Any]] = {}
    for name in args.schedulers:
        env = {**UNLIMITED, "VIDEOPOET_SCHEDULER": name}
        with running_service(
            model, batch_size=None, torch_threads=1, log_name=name, extra_env=env
        ) as service:
            rows[name], used = asyncio.run(measure(service.url, args, capacity))
        if capacity is None:
            capacity, capacity_from = used, name
            print(f"capacity: {capacity} videos/min ({name}'s saturation)", flush=True)
        print_scheduler(name, rows[name])
        sys.stdout.flush()

    top = str(max(args.loads))
    for row in rows.values():
        row["first_preview_ratio"] = ratio(
            row["loads"][top]["first_preview_p50_s"], row["solo"]["latency_p50_s"]
        )
        row["solo_first_preview_ratio"] = ratio(
            row["solo"]["first_preview_p50_s"], row["solo"]["latency_p50_s"]
        )
    static, continuous = rows.get("static"), rows.get("continuous")

    def both(get) -> tuple[Any, Any]:
        return (get(continuous) if continuous else None, get(static) if static else None)

    p99_ratio = ratio(*both(lambda r: r["loads"][top]["latency_p99_s"]))
    throughput_ratio = ratio(*both(lambda r: r["saturation"]["videos_per_min"]))
    first_preview_ratio = continuous["first_preview_ratio"] if continuous else None
    phases = [p for r in rows.values() for p in (r["solo"], r["saturation"], *r["loads"].values())]
    not_completed = sum(sum(p["not_completed"].values()) for p in phases)
    print(
        f"at {float(top):.0%} load: p99 ratio (continuous / static) {p99_ratio}; saturation "
        f"throughput ratio {throughput_ratio}; first preview ratio {first_preview_ratio}; "
        f"{not_completed} requests did not complete"
    )
    print(
        json.dumps(
            {
                "benchmark": "arrivals",
                "smoke": args.smoke,
                "model": model,
                "task": args.task,
                "workers": 1,
                "torch_threads": 1,
                "batch_size": batch_size,
                "schedulers": rows,
                "capacity_videos_per_min": capacity,
                "capacity_from": capacity_from,
                "loads": args.loads,
                "seconds_per_load": args.seconds,
                "seed": args.seed,
                "preview_requested": args.preview,
                "ratio_load": float(top),
                "p99_ratio": p99_ratio,
                "throughput_ratio": throughput_ratio,
                "first_preview_ratio": first_preview_ratio,
                "requests": sum(p["requests"] for p in phases),
                "not_completed": not_completed,
                "machine": machine(),
            }
        )
    )
    return 0 if not_completed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
