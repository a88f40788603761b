"""One check of a GPU machine, within a time budget (8 minutes by default):

    .venv/bin/python benchmarks/gpu_check.py [--out out/gpu_check.json] [--minutes 8]
    .venv/bin/python benchmarks/gpu_check.py --smoke      # the same code paths, CPU, tiny, seconds

Sections, in order (a section that the budget cannot fit is recorded as skipped):

1. tests: the suite's tests that run on the best device present (CUDA here), with pytest in a
   subprocess: the bfloat16 LM, the compiled decode step (CUDA graphs), the batched
   out-of-memory fallback (a real OOM), a training step of each stage under autocast;
   pass/fail per test.
2. decoding: videopoet-1b (random weights, bfloat16) sampling a text_to_image request at batch
   1, 8 and 32, eager and with the compiled decode step (VIDEOPOET_COMPILE=1), then compiled
   with int8 weights (VIDEOPOET_QUANTIZE=int8) at batch 1 and 8: tokens/s and the
   fraction of the memory-bandwidth bound, i.e. the bytes a step must read (weights, the
   sampled rows of the output matrix, the KV cache) per second against the device's peak
   bandwidth (a table of known GPUs) and against a measured large copy.
3. service: the demo pipeline (the shipped checkpoint) sampling N requests the way a worker
   does, batched (one generate_batch call) against one at a time: videos per minute of each.
   `benchmarks/throughput.py` measures the same through the whole service (HTTP, Redis).
4. training: steps/s of each stage at the demo config (its default batch), on the device.

Writes one JSON (--out) and prints a summary; the last line printed is the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

# The suite's tests that run on CUDA when it is present (on the CPU otherwise).
DEVICE_TESTS = [
    "tests/models/test_on_device.py",
    "tests/models/train/test_on_device.py",
    "tests/workers/test_oom_on_device.py",
]
SMOKE_TEST_FILTER = "autocast_is_bfloat16"  # --smoke runs one of them: the path, not the tests

# Peak memory bandwidth, bytes/s, by the name torch reports (the first match counts).
PEAK_BANDWIDTH = [
    ("H200", 4.8e12),
    ("H100 NVL", 3.9e12),
    ("H100 PCIe", 2.0e12),
    ("H100", 3.35e12),  # SXM5, HBM3
    ("GH200", 4.0e12),
    ("A100-SXM4-80GB", 2.039e12),
    ("A100 80GB PCIe", 1.935e12),
    ("A100", 1.555e12),  # 40 GB
    ("L40S", 0.864e12),
    ("L40", 0.864e12),
    ("L4", 0.3e12),
    ("A10G", 0.6e12),
    ("A10", 0.6e12),
    ("RTX 4090", 1.008e12),
    ("RTX 3090", 0.936e12),
    ("V100", 0.9e12),
    ("T4", 0.32e12),
]

# Minimum seconds each section needs to start (a guess, so the whole stays in the budget).
NEEDS = {"tests": 30, "decoding": 60, "service": 30, "training": 30}


class Budget:
    def __init__(self, minutes: float):
        self.end = time.monotonic() + minutes * 60

    def left(self) -> float:
        return self.end - time.monotonic()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def machine(device: str) -> dict:
    info = {
        "device": device,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            peak_bandwidth_gbs=peak_bandwidth(props.name) and peak_bandwidth(props.name) / 1e9,
        )
    return info


def peak_bandwidth(name: str) -> float | None:
    for key, value in PEAK_BANDWIDTH:
        if key.lower() in name.lower():
            return value
    return None


def copy_bandwidth(device: str, smoke: bool) -> float:
    """Bytes/s of a large device-to-device copy (read + write), best of 5."""
    n = (16 if smoke else 1024) * 2**20
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(5):
        sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n / best


# --- 1. tests ------------------------------------------------------------------------------
def run_tests(budget: Budget, smoke: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               f"--junitxml={xml}", *DEVICE_TESTS]  # fmt: skip
        if smoke:
            cmd += ["-k", SMOKE_TEST_FILTER]
        timeout = max(10.0, min(240.0, budget.left() - 60))
        t0 = time.perf_counter()
        try:
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"status": "timeout", "seconds": round(time.perf_counter() - t0, 1)}
        results = {}
        if xml.is_file():
            for case in ET.parse(xml).getroot().iter("testcase"):
                name = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
                outcome = "passed"
                for tag in ("failure", "error", "skipped"):
                    if case.find(tag) is not None:
                        outcome = {"failure": "failed", "error": "error"}.get(tag, tag)
                results[name] = outcome
    failed = [k for k, v in results.items() if v in ("failed", "error")]
    return {
        "status": "passed" if done.returncode == 0 and results else "failed",
        "seconds": round(time.perf_counter() - t0, 1),
        "passed": sum(v == "passed" for v in results.values()),
        "failed": failed,
        "results": results,
        "output_tail": "" if done.returncode == 0 else done.stdout[-2000:] + done.stderr[-1000:],
    }


# --- 2. decoding ---------------------------------------------------------------------------
def compiled_step(device: str):
    """What VIDEOPOET_COMPILE=1 samples with: on CUDA the reduce-overhead compile (CUDA graphs);
    on the CPU (--smoke) the same graph traced and run eagerly (inductor's build is slow there)."""
    from models.generate import compile_decode_step, decode_one_token_static

    if device.startswith("cuda"):
        return compile_decode_step()
    return torch.compile(decode_one_token_static, backend="eager", fullgraph=True, dynamic=False)


def decode_bytes_per_step(lm, vocab, layout, batch: int, kv_len: float) -> float:
    """Bytes one decode step must read: every weight matrix but the token embeddings (a gather),
    only the sampled kind's rows of the output matrix (int8 ones with VIDEOPOET_QUANTIZE=int8),
    and the KV cache up to kv_len."""
    from models.quantize import weight_bytes
    from models.vocab import Kind

    cfg = lm.config
    size = lm.tok_embeddings.weight.element_size()
    head = weight_bytes(lm.output)
    weights = weight_bytes(lm) - lm.tok_embeddings.weight.numel() * size - head
    lo, hi = vocab.code_range(Kind.visual)
    weights += head * (hi - lo) / cfg.vocab_size
    kv = 2 * cfg.n_layers * batch * kv_len * cfg.dim * size
    return weights + kv


def time_generate(lm, vocab, tb, batch: int, step, device: str) -> float:
    """Seconds to sample every output token of `tb` (seeded, temperature 1, no top-k)."""
    from models.generate import SamplingParams, generate_tokens

    ones, nones = [1.0] * batch, [None] * batch
    params = SamplingParams.for_rows(range(batch), ones, nones, nones, ones, device=device)
    sync(device)
    t0 = time.perf_counter()
    generate_tokens(lm, vocab, tb, params, static_step=step)
    sync(device)
    return time.perf_counter() - t0


def run_decoding(budget: Budget, device: str, smoke: bool, bandwidth: dict) -> dict:
    from models.lm import PrefixLM
    from models.pipeline import ModelConfig, TaskShapes
    from models.quantize import quantize_lm
    from models.spec import Task
    from models.vocab import assemble

    name = "tiny" if smoke else "videopoet-1b"
    dtype = torch.float32 if smoke else torch.bfloat16
    config = ModelConfig.from_name(name)
    torch.manual_seed(0)
    with torch.device(device):
        lm = PrefixLM(config.lm)
    lm.init_weights()
    lm = lm.to(dtype).eval()
    layout = TaskShapes(config).layouts()[Task.text_to_image]
    steps = layout.length - layout.prefix_len
    rows = []
    # last, the int8 weight-only LM (VIDEOPOET_QUANTIZE=int8), compiled, as it is meant to run
    runs = [(False, "none", (1, 8, 32)), (True, "none", (1, 8, 32)), (True, "int8", (1, 8))]
    for compiled, quantize, batches in runs:
        step = compiled_step(device) if compiled else None
        if quantize != "none":
            quantize_lm(lm, quantize)
        for batch in batches:
            # a compile (and CUDA graph capture) of the 1b step takes up to a minute per batch
            if budget.left() < (90 if compiled and not smoke else NEEDS["decoding"] / 2):
                rows.append(
                    {
                        "batch": batch,
                        "compiled": compiled,
                        "quantize": quantize,
                        "status": "skipped: budget",
                    }
                )
                continue
            text = torch.randn(batch, config.text_tokens, 384).to(dtype)
            mask = torch.ones(batch, config.text_tokens, dtype=torch.bool)
            tb = assemble(layout, config.vocab, text=text, text_mask=mask)

            t0 = time.perf_counter()
            # the first run compiles (and records the CUDA graph) for this batch: a warm-up
            first = time_generate(lm, config.vocab, tb, batch, step, device)
            best = min(time_generate(lm, config.vocab, tb, batch, step, device) for _ in range(2))
            per_step = best / steps
            # eager attention reads the cache up to the position; the static step all of it
            kv_len = layout.length if compiled else layout.prefix_len + steps / 2
            need = decode_bytes_per_step(lm, config.vocab, layout, batch, kv_len)
            row = {
                "batch": batch,
                "compiled": compiled,
                "quantize": quantize,
                "tokens_per_s": round(batch * steps / best, 1),
                "ms_per_step": round(per_step * 1e3, 3),
                "warmup_s": round(first, 2),
                "seconds": round(time.perf_counter() - t0, 1),
                "bytes_per_step_mb": round(need / 1e6, 1),
                "achieved_gbs": round(need / per_step / 1e9, 1),
            }
            for key, peak in bandwidth.items():
                if peak:
                    row[f"bandwidth_fraction_{key}"] = round(need / per_step / peak, 3)
            rows.append(row)
    return {
        "model": name,
        "dtype": str(dtype).replace("torch.", ""),
        "task": "text_to_image",
        "new_tokens": steps,
        "prefix": layout.prefix_len,
        "rows": rows,
    }


# --- 3. service ----------------------------------------------------------------------------
def run_service(budget: Budget, device: str, smoke: bool) -> dict:
    from models.pipeline import load_pipeline
    from models.spec import Task, TaskSpec

    name = "tiny" if smoke else "demo"
    n = 4 if smoke else 8
    pipeline = load_pipeline(name, device=device)
    specs = [
        TaskSpec(task=Task.text_to_video, prompt=f"a red circle moves left {i}", seed=100 + i)
        for i in range(n)
    ]
    pipeline.generate(specs[0])  # warm-up
    sync(device)
    t0 = time.perf_counter()
    batched = pipeline.generate_batch(specs)
    sync(device)
    t_batched = time.perf_counter() - t0
    errors = [r for r in batched if isinstance(r, Exception)]
    t0 = time.perf_counter()
    for spec in specs:
        pipeline.generate(spec)
        if budget.left() < 10:
            return {"status": "skipped: budget (one at a time did not finish)"}
    sync(device)
    t_alone = time.perf_counter() - t0
    return {
        "model": name,
        "requests": n,
        "task": "text_to_video",
        "batched_videos_per_min": round(n / t_batched * 60, 1),
        "one_at_a_time_videos_per_min": round(n / t_alone * 60, 1),
        "ratio": round(t_alone / t_batched, 2),
        "errors": [str(e) for e in errors],
    }


# --- 4. training ---------------------------------------------------------------------------
def run_training(budget: Budget, device: str, smoke: bool) -> dict:
    from models.train import main_train

    config = "tiny" if smoke else "demo"
    steps = 3 if smoke else 30
    stages = {}
    with tempfile.TemporaryDirectory() as out:
        for stage in ("video-tokenizer", "audio-tokenizer", "lm"):
            if budget.left() < NEEDS["training"] / 3:
                stages[stage] = {"status": "skipped: budget"}
                continue
            extra = ["--clips", "16" if smoke else "64"] if stage == "lm" else []
            t0 = time.perf_counter()
            minutes = max(0.1, min(2.0, (budget.left() - 20) / 60 / 2))
            main_train([stage, "--config", config, "--out", out, "--steps", str(steps),
                        "--device", device, "--log-every", "1", "--max-minutes", str(minutes),
                        "--checkpoint-minutes", "60", *extra])  # fmt: skip
            component = stage.replace("-", "_")
            lines = (Path(out) / "train" / f"{component}.jsonl").read_text().splitlines()
            log = [json.loads(line) for line in lines]
            step_s = [r["step_s"] for r in log[1:]] or [log[0]["step_s"]]  # after the first
            stages[stage] = {
                "steps": len(log),
                "steps_per_s": round(1 / max(statistics.median(step_s), 1e-6), 2),
                "last_loss": log[-1]["loss"],
                "seconds": round(time.perf_counter() - t0, 1),
            }
    return {"config": config, "stages": stages}


# --- main ----------------------------------------------------------------------------------
def summary(report: dict) -> list[str]:
    lines = [f"gpu_check on {report['machine'].get('gpu', report['machine']['device'])}"]
    t = report["tests"]
    lines.append(
        f"tests: {t.get('status')} ({t.get('passed', 0)} passed, failed: {t.get('failed')})"
    )
    d = report["decoding"]
    for row in d.get("rows", []):
        if "tokens_per_s" not in row:
            lines.append(
                f"decode batch {row['batch']} compiled={row['compiled']} "
                f"quantize={row['quantize']}: {row['status']}"
            )
            continue
        frac = row.get("bandwidth_fraction_peak", row.get("bandwidth_fraction_copy"))
        int8 = " int8" if row["quantize"] == "int8" else "     "
        lines.append(
            f"{d['model']} decode batch {row['batch']:>2} "
            f"{'compiled' if row['compiled'] else 'eager   '}{int8}: "
            f"{row['tokens_per_s']:>9} tok/s, "
            f"{row['ms_per_step']} ms/step, "
            + (f"{frac:.0%} of the bandwidth bound" if frac is not None else "")
        )
    s = report["service"]
    if "ratio" in s:
        lines.append(
            f"{s['model']} service, {s['requests']} requests: batched "
            f"{s['batched_videos_per_min']} videos/min, one at a time "
            f"{s['one_at_a_time_videos_per_min']} ({s['ratio']}x)"
        )
    for stage, r in report["training"].get("stages", {}).items():
        lines.append(f"train {stage} ({report['training']['config']}): {r}")
    return lines


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="out/gpu_check.json", help="where the JSON goes")
    parser.add_argument("--minutes", type=float, default=8.0, help="time budget")
    parser.add_argument(
        "--smoke", action="store_true", help="the same code paths on the CPU at the tiny size"
    )
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cuda, cpu")
    args = parser.parse_args(argv)
    device = args.device
    if args.smoke:
        device = "cpu"
        torch.set_num_threads(1)
    elif device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":  # videopoet-1b on a CPU would take far past the budget
            raise SystemExit(
                "gpu_check: torch sees no CUDA device; --smoke runs the same code on the CPU at "
                "the tiny size (--device cpu times videopoet-1b on the CPU: slow)"
            )
    budget = Budget(args.minutes)
    report: dict = {"benchmark": "gpu_check", "smoke": args.smoke, "machine": machine(device)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    bandwidth = {"copy": copy_bandwidth(device, args.smoke)}
    if device.startswith("cuda"):
        bandwidth["peak"] = peak_bandwidth(torch.cuda.get_device_properties(0).name)
    report["machine"]["copy_bandwidth_gbs"] = round(bandwidth["copy"] / 1e9, 1)
    sections = {
        "tests": lambda: run_tests(budget, args.smoke),
        "decoding": lambda: run_decoding(budget, device, args.smoke, bandwidth),
        "service": lambda: run_service(budget, device, args.smoke),
        "training": lambda: run_training(budget, device, args.smoke),
    }
    for name, run in sections.items():
        if budget.left() < NEEDS[name] and not args.smoke:
            report[name] = {"status": "skipped: budget"}
            continue
        t0 = time.perf_counter()
        try:
            report[name] = run()
        except Exception as exc:  # a section's failure is a finding; the others still run
            report[name] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
        report[name].setdefault("seconds", round(time.perf_counter() - t0, 1))
        out.write_text(json.dumps(report, indent=2) + "\n")  # what ran so far, if cut off
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    report["seconds"] = round(args.minutes * 60 - budget.left(), 1)
    out.write_text(json.dumps(report, indent=2) + "\n")
    for line in summary(report):
        print(line)
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
