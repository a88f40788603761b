"""What every stage shares: the run folder (config, training state, shipped weights, JSONL loss
log), `--init-from` loading, the learning-rate schedule, autocast and the training loop with its
checkpoints, resume, time limit and stop signals."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.pipeline import ModelConfig
from models.train.errors import TrainingError

log = logging.getLogger(__name__)

# Stage (the CLI's name) -> the component it trains (its file and state names).
STAGES = {"video-tokenizer": "video_tokenizer", "audio-tokenizer": "audio_tokenizer", "lm": "lm"}


@dataclass
class StageDefaults:
    steps: int
    batch: int
    lr: float
    warmup: int


# Defaults of the demo recipe (2 CPU cores); `tiny` tests pass their own.
DEFAULTS = {
    "video_tokenizer": StageDefaults(steps=3000, batch=4, lr=2e-3, warmup=100),
    "audio_tokenizer": StageDefaults(steps=1500, batch=8, lr=2e-3, warmup=100),
    "lm": StageDefaults(steps=1500, batch=8, lr=1.5e-3, warmup=100),
}


class Run:
    """One stage's folder, config, training state, log and clock."""

    def __init__(self, out: str | Path, stage: str, config_name: str):
        self.out = Path(out)
        self.stage = stage
        self.component = STAGES[stage]
        (self.out / "train").mkdir(parents=True, exist_ok=True)
        cfg_path = self.out / "config.json"
        if cfg_path.is_file():
            self.config = ModelConfig.from_dict(json.loads(cfg_path.read_text()))
            if self.config.name != config_name:  # --config names the preset of a new folder only
                log.warning(
                    "%s already holds a %r model (its config.json): training that; --config %r "
                    "is used only by a folder without one",
                    self.out,
                    self.config.name,
                    config_name,
                )
        else:
            self.config = ModelConfig.from_name(config_name)
            cfg_path.write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        self.state_path = self.out / "train" / f"{self.component}.pt"
        self.log_path = self.out / "train" / f"{self.component}.jsonl"

    def load_state(self, resume: bool) -> dict | None:
        if not self.state_path.is_file():
            return None
        if not resume:
            raise TrainingError(
                f"{self.state_path} exists: pass --resume to continue it, or choose another --out"
            )
        return torch.load(self.state_path, map_location="cpu", weights_only=True)

    def save(
        self,
        module: torch.nn.Module,
        opt: torch.optim.Optimizer,
        step: int,
        elapsed: float,
        extra: dict | None = None,
    ) -> None:
        """Training state (atomically) and the component's shipped weights."""
        from safetensors.torch import save_file

        state = {
            "model": module.state_dict(),
            "optimizer": opt.state_dict(),
            "step": step,
            "elapsed_s": elapsed,
            **(extra or {}),
        }
        tmp = self.state_path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.state_path)
        weights = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
        tmp = self.out / f"{self.component}.safetensors.tmp"
        save_file(weights, str(tmp))
        tmp.replace(self.out / f"{self.component}.safetensors")

    def log(self, record: dict) -> None:
        with self.log_path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def init_path(folder: str | Path, component: str) -> Path:
    """`<component>.safetensors` of a checkpoint folder or shipped name (--init-from)."""
    from models.card import resolve_checkpoint

    weights = (resolve_checkpoint(str(folder)) or Path(folder)) / f"{component}.safetensors"
    if not weights.is_file():
        raise TrainingError(
            f"--init-from: {weights} does not exist; give a checkpoint folder that holds it"
        )
    return weights


def load_matching(module: torch.nn.Module, path: str) -> list[str]:
    """Load the tensors of a safetensors file whose names and shapes match `module`'s
    (--init-from). Returns the names of module tensors that keep their fresh values; when the
    architectures differ (say, another audio encoder) the rest still starts from the file.
    """
    from safetensors.torch import load_file

    saved, own = load_file(path), module.state_dict()
    usable = {k: v for k, v in saved.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise TrainingError(
            f"--init-from: no tensor in {path} fits this model; is it the same stage?"
        )
    module.load_state_dict(usable, strict=False)
    fresh = sorted(set(own) - set(usable))
    if fresh:
        log.warning(
            "--init-from %s: %d of %d tensors start fresh (not in the file or another shape): %s",
            path,
            len(fresh),
            len(own),
            ", ".join(fresh[:8]) + (" ..." if len(fresh) > 8 else ""),
        )
    log.info("starts from %d tensors of %s", len(usable), path)
    return fresh


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warmup, then cosine down to a tenth of `lr` at `steps`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, steps - warmup))
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


class StopSignal:
    """Set by SIGTERM / SIGINT: the loop checkpoints and returns at the next step."""

    def __init__(self):
        self.flag = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (tests)
                pass

    def _handle(self, *_):
        self.flag = True


def autocast(device: str):
    """bfloat16 autocast on CUDA (the quantizers keep their own float32); nothing on CPU."""
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_loop(
    run: Run,
    module: torch.nn.Module,
    args,
    step_fn,
    extra_state: Callable[[], dict] = dict,
    load_extra: Callable[[dict], None] | None = None,
) -> dict:
    """The shared loop: lr schedule, clipping, logging, checkpoints, resume, time limit.

    step_fn(rng, step) -> (loss, {name: value to log}); rng is the step's own, so the data
    order is a function of the seed and step alone. extra_state() gives what else a checkpoint
    keeps (a discriminator); load_extra(state) restores it on resume.
    """
    from tqdm import tqdm

    d = DEFAULTS[run.component]
    steps = args.steps or d.steps
    warmup = min(d.warmup, max(1, steps // 10))
    lr = args.lr or d.lr
    module.to(args.device)
    opt = torch.optim.AdamW(module.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    state = run.load_state(args.resume)
    start, elapsed = 0, 0.0
    if state is not None:
        module.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, elapsed = int(state["step"]), float(state["elapsed_s"])
        if load_extra is not None:
            load_extra(state)
        log.info("resuming %s at step %d (%.0f s trained)", run.stage, start, elapsed)
    elif args.init_from:  # main_train has resolved it to the component's file
        load_matching(module, str(args.init_from))
    module.train()
    stop = StopSignal()
    t_start = time.perf_counter()
    t_ckpt = time.perf_counter()
    limit = args.max_minutes * 60 if args.max_minutes else math.inf
    bar = tqdm(total=steps, initial=start, desc=run.stage, mininterval=10, file=sys.stderr)
    step, last = start, {}
    ema = None
    stop_at = min(steps, args.stop_at or steps)
    while step < stop_at and not stop.flag:
        t0 = time.perf_counter()
        rng = np.random.default_rng([args.seed, step])  # data order: a function of the step
        # with --max-minutes the cosine follows whichever runs out first, steps or time
        clock = (time.perf_counter() - t_start) / limit * steps if limit < math.inf else 0
        for g in opt.param_groups:
            g["lr"] = lr_at(max(step, int(clock)), steps, lr, warmup)
        with autocast(args.device):
            loss, parts = step_fn(rng, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = float(torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0))
        opt.step()
        step += 1
        dt = time.perf_counter() - t0
        value = float(loss.detach())
        ema = value if ema is None else 0.95 * ema + 0.05 * value
        last = {
            "step": step,
            "loss": round(value, 5),
            **{k: round(float(v), 5) for k, v in parts.items()},
            "lr": round(opt.param_groups[0]["lr"], 7),
            "grad_norm": round(gnorm, 4),
            "step_s": round(dt, 3),
            "elapsed_s": round(elapsed + time.perf_counter() - t_start, 1),
        }
        if step % args.log_every == 0 or step == steps:
            run.log(last)
        bar.update(1)
        bar.set_postfix(loss=f"{ema:.4f}", refresh=False)
        now = time.perf_counter()
        out_of_time = now - t_start >= limit
        due = now - t_ckpt >= args.checkpoint_minutes * 60
        if due or step == stop_at or out_of_time or stop.flag:
            run.save(module, opt, step, elapsed + now - t_start, extra_state())
            t_ckpt = now
        if out_of_time:
            log.info("--max-minutes reached at step %d", step)
            break
    bar.close()
    if step == start:  # nothing ran (already done): keep the files as they are
        return {"step": step}
    run.save(module, opt, step, elapsed + time.perf_counter() - t_start, extra_state())
    return last
