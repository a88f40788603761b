"""One request end to end, split into the service's stages, so the service's own overhead shows.

    .venv/bin/python benchmarks/latency.py [--model NAME] [--task text_to_video] [--repeat 3]
                                           [--torch-threads N] [--batch-window SECONDS]

Starts a real service on loopback (embedded Redis, the API and one worker with the default
batch settings; see benchmarks/service.py), sends one warm-up request, then --repeat requests
one after another, each alone in the service. For each: the client's end-to-end time (POST to
the video seen completed, polled every 20 ms) split into
  api         the POST (validation, record, enqueue)
  queue       enqueued -> claimed by the worker (includes the batch window)
  inputs      decoding the stored inputs (ffmpeg)
  text, tokenize, sampling, detokenize   the pipeline (the model's work)
  mux         encoding the mp4, thumbnail, spritesheet (ffmpeg)
  other       the rest: record writes, RQ bookkeeping, the client's polling granularity
from the record's stage timings. Prints the median request and the overhead share (everything
but the model's work; and queue + inputs + mux alone); the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import httpx
from service import add_service_arguments, machine, pick_model, running_service

MODEL_STAGES = ("text", "tokenize", "sampling", "detokenize")
STAGES = ("api", "queue", "inputs", *MODEL_STAGES, "mux", "other")


def measure(service: Any, http: httpx.Client, task: str, seed: int, timeout: float) -> dict:
    started = time.perf_counter()
    video_id, api = service.create(http, task=task, prompt=f"a shape moves {seed}", seed=seed)
    record, seen = service.wait([video_id], timeout)[video_id]
    if record.status.value != "completed":
        raise RuntimeError(f"{video_id} {record.status.value}: {record.error}")
    total = seen - started
    split = {"api": api, **{k: record.timings.get(k, 0.0) for k in STAGES[1:-1]}}
    split["other"] = max(0.0, total - sum(split.values()))
    model = sum(split[k] for k in MODEL_STAGES)
    return {
        "seconds": round(total, 4),
        "stages": {k: round(v, 4) for k, v in split.items()},
        "overhead_share": round((total - model) / total, 4),
        "queue_inputs_mux_share": round(
            (split["queue"] + split["inputs"] + split["mux"]) / total, 4
        ),
        "batch_size": record.batch_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_service_arguments(parser)
    parser.add_argument("--repeat", type=int, default=3, choices=range(1, 11), metavar="1..10")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per request")
    args = parser.parse_args()
    model = pick_model(args.model)

    print(f"model {model}, {args.task}, one request at a time; machine {machine()}")
    with (
        running_service(
            model, batch_size=8, torch_threads=args.torch_threads, batch_window=args.batch_window
        ) as service,
        httpx.Client(timeout=60) as http,
    ):
        measure(service, http, args.task, 0, args.timeout)  # warm-up: first-call costs
        runs = [
            measure(service, http, args.task, seed, args.timeout)
            for seed in range(1, args.repeat + 1)
        ]
    for run in runs:
        print(
            f"  {run['seconds']:8.3f} s  "
            + "  ".join(f"{k} {v:.3f}" for k, v in run["stages"].items())
        )
    median = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
    print(f"median request: {median['seconds']:.3f} s")
    for stage, seconds in median["stages"].items():
        print(f"  {stage:<11} {seconds:8.3f} s  {seconds / median['seconds']:6.1%}")
    print(
        f"service overhead (all but the model's work): {median['overhead_share']:.1%}; "
        f"queue + inputs + mux: {median['queue_inputs_mux_share']:.1%}"
    )
    print(
        json.dumps(
            {
                "benchmark": "latency",
                "model": model,
                "task": args.task,
                "torch_threads": args.torch_threads,
                "batch_window_seconds": args.batch_window,
                "median": median,
                "runs": runs,
                "overhead_share_median": statistics.median(r["overhead_share"] for r in runs),
                "machine": machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
