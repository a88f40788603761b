"""`benchmarks/arrivals.py`: its `--smoke` run against a real service on the tiny model, both
schedulers (about 30 s on 2 shared CPU cores), so the benchmark does not rot; and its SSE
client against a stand-in API (no service)."""

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

ROOT = Path(__file__).resolve().parent.parent

# benchmarks/ is not a package: on sys.path only for this import (its models.py would shadow
# the models package for everyone else).
sys.path.insert(0, str(ROOT / "benchmarks"))
try:
    import arrivals
finally:
    sys.path.remove(str(ROOT / "benchmarks"))

SCHEDULERS = ["static", "continuous"]


def test_arrivals_smoke_completes_every_request():
    done = subprocess.run(
        [sys.executable, "benchmarks/arrivals.py", "--smoke", "--schedulers", ",".join(SCHEDULERS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])  # the last line: the JSON
    assert report["benchmark"] == "arrivals" and report["smoke"]
    for key in ("p99_ratio", "throughput_ratio", "first_preview_ratio", "machine"):
        assert key in report
    assert report["machine"]["cpus"] and report["capacity_from"] == SCHEDULERS[0]
    assert report["capacity_videos_per_min"] > 0
    assert report["not_completed"] == 0 and report["requests"] > 0
    assert list(report["schedulers"]) == SCHEDULERS
    for row in report["schedulers"].values():
        assert row["solo"]["completed"] == row["solo"]["requests"] == 1
        saturation = row["saturation"]
        assert saturation["completed"] == saturation["requests"] == 4
        assert saturation["videos_per_min"] > 0
        assert set(row["loads"]) == {"0.5", "0.8"}
        for load in row["loads"].values():
            assert load["completed"] == load["requests"] >= 3 and not load["not_completed"]
            assert 0 < load["latency_p50_s"] <= load["latency_p90_s"] <= load["latency_p99_s"]
    if len(SCHEDULERS) == 2:
        assert report["p99_ratio"] > 0 and report["throughput_ratio"] > 0


def stand_in_api(accepts_preview: bool) -> tuple[FastAPI, list]:
    """POST /v1/videos and its events: the first stream drops before the end, the second
    (resumed with Last-Event-ID) sends a preview, a keep-alive and the completed video."""
    app, seen = FastAPI(), []

    @app.post("/v1/videos")
    async def create(request: Request):
        body = await request.json()
        seen.append(("create", body))
        if "preview" in body and not accepts_preview:
            error = {"message": "unknown field 'preview'", "param": "preview", "code": "x"}
            return JSONResponse({"error": error}, status_code=422)
        return {"id": "video_1", "status": "queued"}

    @app.get("/v1/videos/{video_id}/events")
    async def events(video_id: str, request: Request):
        resumed = request.headers.get("last-event-id")
        seen.append(("events", resumed))

        async def stream():
            yield "retry: 1000\n\n"
            if resumed is None:
                yield 'id: 1\nevent: video\ndata: {"id": "video_1", "status": "queued"}\n\n'
                return  # dropped
            yield 'event: preview\ndata: {"frame_index": 4, "frames": 5,\ndata: "url": "u"}\n\n'
            yield ": keep-alive\n\n"
            yield 'event: preview\ndata: {"frame_index": 9, "frames": 10, "url": "u"}\n\n'
            yield 'id: 3\nevent: video\ndata: {"id": "video_1", "status": "completed"}\n\n'

        return StreamingResponse(stream(), media_type="text/event-stream")

    return app, seen


def follow_one(app: FastAPI, preview: bool) -> tuple[arrivals.Client, arrivals.Outcome]:
    async def go():
        client = arrivals.Client(
            "http://api", "text_to_video", preview, transport=httpx.ASGITransport(app=app)
        )
        try:
            return client, await client.video(7, timeout=10)
        finally:
            await client.close()

    return asyncio.run(go())


def test_client_follows_the_stream_through_a_drop_and_counts_previews():
    app, seen = stand_in_api(accepts_preview=True)
    client, outcome = follow_one(app, preview=True)
    assert outcome.status == "completed" and outcome.video_id == "video_1"
    assert outcome.previews == 2 and 0 < outcome.first_preview <= outcome.latency
    assert not client.preview_refused
    assert seen[0] == (
        "create",
        {"task": "text_to_video", "prompt": arrivals.prompt(7), "seed": 7, "preview": True},
    )
    assert seen[1:] == [("events", None), ("events", "1")]


def test_client_asks_again_without_preview_when_the_field_is_refused():
    app, seen = stand_in_api(accepts_preview=False)
    client, outcome = follow_one(app, preview=True)
    assert outcome.status == "completed" and client.preview_refused and not client.preview
    assert [s[1].get("preview") for s in seen if s[0] == "create"] == [True, None]


def test_arrivals_are_the_same_for_the_same_seed():
    times = arrivals.arrival_times(2.0, 30.0, seed=5, minimum=1)
    assert times == arrivals.arrival_times(2.0, 30.0, seed=5, minimum=1)
    assert times == sorted(times) and times[-1] <= 30.0 and 40 < len(times) < 80
    assert len(arrivals.arrival_times(0.01, 1.0, seed=5, minimum=3)) == 3
