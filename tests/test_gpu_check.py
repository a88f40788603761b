"""`benchmarks/gpu_check.py --smoke`: the GPU check's code paths on the CPU at the tiny size
(about 15 s on 2 CPU cores), so the script a GPU machine runs does not rot."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_smoke_writes_every_section(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert json.loads(done.stdout.strip().splitlines()[-1]) == report  # the last line: the JSON
    assert report["smoke"] and report["machine"]["device"] == "cpu"

    tests = report["tests"]
    assert tests["status"] == "passed" and tests["passed"] >= 1 and not tests["failed"]

    rows = report["decoding"]["rows"]
    assert {(r["batch"], r["compiled"], r["quantize"]) for r in rows} == {
        (b, c, "none") for b in (1, 8, 32) for c in (False, True)
    } | {(1, True, "int8"), (8, True, "int8")}
    for r in rows:
        assert r["tokens_per_s"] > 0 and 0 < r["bandwidth_fraction_copy"] < 10

    service = report["service"]
    assert service["batched_videos_per_min"] > 0 and service["one_at_a_time_videos_per_min"] > 0
    assert not service["errors"]

    stages = report["training"]["stages"]
    assert set(stages) == {"video-tokenizer", "audio-tokenizer", "lm"}
    assert all(s["steps"] == 3 and s["steps_per_s"] > 0 for s in stages.values())
    assert "gpu_check on cpu" in done.stdout  # the summary
