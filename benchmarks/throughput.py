"""Videos per minute of one worker: N concurrent requests sampled in batches against the same
N run one at a time.

    .venv/bin/python benchmarks/throughput.py [--model NAME] [--requests 8] [--task text_to_video]
                                              [--rounds 1] [--torch-threads N]
                                              [--batch-window SECONDS]

Starts a real service twice on loopback (embedded Redis, the API and ONE worker; see
benchmarks/service.py): with VIDEOPOET_BATCH_SIZE=N (batched) and with VIDEOPOET_BATCH_SIZE=1
(one at a time). Each time: one warm-up request, then the same N requests (fixed prompts and
seeds) sent at once, from N threads; the clock runs from the first POST to the last video
seen completed. Prints videos per minute for each, their ratio, the batch sizes the worker
used and the mean seconds per stage a video waited on; the last line is JSON. With --rounds R
the two settings alternate R times and each keeps its best round, so background load hits
both alike. --model defaults to the shipped demo checkpoint when it exists, else tiny.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from service import add_service_arguments, machine, pick_model, running_service

STAGES = ("queue", "inputs", "text", "tokenize", "sampling", "detokenize", "mux")


def run(model: str, args: argparse.Namespace, batch_size: int) -> dict[str, Any]:
    task, requests, timeout = args.task, args.requests, args.timeout
    with running_service(
        model,
        batch_size=batch_size,
        torch_threads=args.torch_threads,
        batch_window=args.batch_window,
        log_name=f"batch{batch_size}",
    ) as service:
        with httpx.Client(timeout=60) as http:
            warm, _ = service.create(http, task=task, prompt="warm up", seed=1)
            service.wait([warm], timeout)
            started = time.perf_counter()
            with ThreadPoolExecutor(requests) as pool:  # all N at once, as N clients would
                ids = list(
                    pool.map(
                        lambda i: service.create(
                            http, task=task, prompt=f"shape {i} moves", seed=100 + i
                        )[0],
                        range(requests),
                    )
                )
            done = service.wait(ids, timeout)
        seconds = max(t for _, t in done.values()) - started
        records = [record for record, _ in done.values()]
        failed = [r.id for r in records if r.status.value != "completed"]
        if failed:
            raise RuntimeError(f"{len(failed)} videos did not complete; see {service.log}")
        stages = {
            stage: round(statistics.fmean((r.timings or {}).get(stage, 0.0) for r in records), 3)
            for stage in STAGES
        }
        queued_at = [r.started_at - (r.timings or {}).get("queue", 0.0) for r in records]
        return {
            "batch_size_setting": batch_size,
            "seconds": round(seconds, 2),
            # how far apart the N requests reached the queue (the API takes them one by one)
            "arrival_spread_seconds": round(max(queued_at) - min(queued_at), 3),
            "videos_per_minute": round(requests / seconds * 60, 2),
            "batch_sizes": sorted(r.batch_size or 0 for r in records),
            "mean_stage_seconds": stages,
            "load_average": machine()["load_average"],
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_service_arguments(parser)
    parser.add_argument("--requests", type=int, default=8, choices=range(2, 33), metavar="2..32")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=1, choices=range(1, 6), metavar="1..5")
    args = parser.parse_args()
    model = pick_model(args.model)

    print(f"model {model}, {args.requests} x {args.task}, one worker; machine {machine()}")
    rounds: dict[str, list[dict[str, Any]]] = {"batched": [], "one_at_a_time": []}
    for _ in range(args.rounds):
        rounds["batched"].append(run(model, args, args.requests))
        print(f"batched (batch size {args.requests}): {rounds['batched'][-1]}")
        rounds["one_at_a_time"].append(run(model, args, 1))
        print(f"one at a time (batch size 1):  {rounds['one_at_a_time'][-1]}")
    batched, alone = (max(r, key=lambda x: x["videos_per_minute"]) for r in rounds.values())
    ratio = batched["videos_per_minute"] / alone["videos_per_minute"]
    print(
        f"videos per minute: batched {batched['videos_per_minute']:.2f}, "
        f"one at a time {alone['videos_per_minute']:.2f}, ratio {ratio:.2f}x"
    )
    print(
        json.dumps(
            {
                "benchmark": "throughput",
                "model": model,
                "task": args.task,
                "requests": args.requests,
                "torch_threads": args.torch_threads,
                "batch_window_seconds": args.batch_window,
                "batched": batched,
                "one_at_a_time": alone,
                "ratio": round(ratio, 3),
                "rounds": {
                    mode: [r["videos_per_minute"] for r in runs] for mode, runs in rounds.items()
                },
                "machine": machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
