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
from models.train import distributed
from models.train.errors import TrainingError

log = logging.getLogger(__name__)

# Stage (the CLI's name) -> the component it trains (its file and state names).
STAGES = {
    "video-tokenizer": "video_tokenizer",
    "audio-tokenizer": "audio_tokenizer",
    "lm": "lm",
    "sr": "super_resolution",
}


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
    "super_resolution": StageDefaults(steps=4000, batch=8, lr=1e-3, warmup=100),
}


class Run:
    """One stage's folder, config, training state, log and clock. Under torchrun every rank has
    one; rank 0 alone writes the folder."""

    def __init__(self, out: str | Path, stage: str, config_name: str):
        self.out = Path(out)
        self.stage = stage
        self.component = STAGES[stage]
        self.world = distributed.world()
        cfg_path = self.out / "config.json"
        if self.world.main:
            (self.out / "train").mkdir(parents=True, exist_ok=True)
            if not cfg_path.is_file():
                config = ModelConfig.from_name(config_name)
                cfg_path.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        distributed.barrier()  # the others read the config rank 0 has written
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
        else:  # rank 0 could not write it (it raised): the same error here
            self.config = ModelConfig.from_name(config_name)
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
        """Training state (atomically) and the component's shipped weights; under torchrun every
        rank calls it (FSDP gathers the shards) and rank 0 writes."""
        from safetensors.torch import save_file

        model, optimizer = distributed.full_state(module, opt)
        if not self.world.main:
            return
        state = {
            "model": model,
            "optimizer": optimizer,
            "world_size": self.world.size,
            "step": step,
            "elapsed_s": elapsed,
            **(extra or {}),
        }
        tmp = self.state_path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.state_path)
        weights = {k: v.detach().contiguous().cpu() for k, v in model.items()}
        tmp = self.out / f"{self.component}.safetensors.tmp"
        save_file(weights, str(tmp))
        tmp.replace(self.out / f"{self.component}.safetensors")

    def log(self, record: dict) -> None:
        """One JSON line (rank 0's), with the run's world_size."""
        if not self.world.main:
            return
        with self.log_path.open("a") as f:
            f.write(json.dumps({**record, "world_size": self.world.size}) + "\n")


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


def param_groups(module: torch.nn.Module, fresh: list[str], mult: float) -> list[dict]:
    """The optimizer's groups: every parameter at the schedule's lr ("lr_mult" 1), and, when
    `fresh` names some (tensors --init-from could not fill) and `mult` is not 1, those in a
    second group at `mult` times it. One group otherwise, as a run without the flag has."""
    names = set(fresh)
    new = [p for n, p in module.named_parameters() if n in names]
    if not new or mult == 1.0:
        return [{"params": list(module.parameters()), "lr_mult": 1.0}]
    old = [p for n, p in module.named_parameters() if n not in names]
    return [{"params": old, "lr_mult": 1.0}, {"params": new, "lr_mult": mult}]


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
    order is a function of the seed and step alone (under torchrun every rank draws the same
    global batch and takes its own examples of it: `distributed.shard`). extra_state() gives
    what else a checkpoint keeps (a discriminator); load_extra(state) restores it on resume.

    Under torchrun the step runs through DDP (FSDP with args.fsdp), the logged losses are the
    mean over ranks, and the ranks agree each step on whether to checkpoint or stop.
    """
    from tqdm import tqdm

    world = distributed.world()
    d = DEFAULTS[run.component]
    steps = args.steps or d.steps
    warmup = min(d.warmup, max(1, steps // 10))
    lr = args.lr or d.lr
    module.to(args.device)
    state = run.load_state(args.resume)
    start, elapsed = 0, 0.0
    fresh: list[str] = []  # tensors the --init-from file lacked (they may train at another lr)
    if state is not None:  # every rank reads the same file, before any sharding
        module.load_state_dict(state["model"])
        start, elapsed = int(state["step"]), float(state["elapsed_s"])
        fresh = list(state.get("fresh", []))
        if load_extra is not None:
            load_extra(state)
        log.info("resuming %s at step %d (%.0f s trained)", run.stage, start, elapsed)
    elif args.init_from:  # main_train has resolved it to the component's file
        fresh = load_matching(module, str(args.init_from))
    module.train()
    step_through = distributed.wrap(module, step_fn, args.device, getattr(args, "fsdp", False))
    mult = getattr(args, "fresh_lr_mult", None)
    groups = param_groups(module, fresh, 1.0 if mult is None else mult)
    if state is not None:  # the groups the checkpoint's optimizer has
        saved = len(state["optimizer"]["param_groups"])
        if saved == 1 and len(groups) > 1:
            raise TrainingError(
                f"--fresh-lr-mult {mult:g}: {run.stage} has trained its {len(fresh)} fresh "
                "tensors at the one learning rate; resume without the flag, or start a new "
                "run from its weights (--init-from)"
            )
        groups = param_groups(module, fresh, 0.0 if saved > 1 else 1.0)  # mult: the state's
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    if state is not None:
        distributed.load_optimizer(module, opt, state["optimizer"])
        if mult is not None and len(opt.param_groups) > 1:  # given again: it wins
            opt.param_groups[-1]["lr_mult"] = mult
    if len(opt.param_groups) > 1:
        log.info(
            "%d fresh tensors train at %g x the learning rate (--fresh-lr-mult)",
            len(opt.param_groups[-1]["params"]),
            opt.param_groups[-1].get("lr_mult", 1.0),
        )
    stop = StopSignal()
    t_start = time.perf_counter()
    t_ckpt = time.perf_counter()
    limit = args.max_minutes * 60 if args.max_minutes else math.inf
    bar = tqdm(
        total=steps,
        initial=start,
        desc=run.stage,
        mininterval=10,
        file=sys.stderr,
        disable=not world.main,
    )
    step, last = start, {}
    ema = None
    ran = 0.0  # seconds this run has trained, as of the last step (the ranks' mean)
    stop_at = min(steps, args.stop_at or steps)
    while step < stop_at:  # a stop signal breaks below, when every rank knows of it
        t0 = time.perf_counter()
        rng = np.random.default_rng([args.seed, step])  # data order: a function of the step
        # with --max-minutes the cosine follows whichever runs out first, steps or time
        # (the ranks' clock of the step before: every rank must use the same lr)
        clock = ran / limit * steps if limit < math.inf else 0
        for g in opt.param_groups:
            g["lr"] = lr_at(max(step, int(clock)), steps, lr, warmup) * g.get("lr_mult", 1.0)
        with autocast(args.device):
            loss, parts = step_through(rng, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        gnorm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # FSDP
        opt.step()
        step += 1
        now = time.perf_counter()
        dt = now - t0
        names = list(parts)
        # one collective: the losses (mean over ranks) and whether any rank must stop or save
        flags = [stop.flag, now - t_start >= limit, now - t_ckpt >= args.checkpoint_minutes * 60]
        summed = distributed.all_sum(
            [
                float(loss.detach()),
                *(float(parts[k]) for k in names),
                now - t_start,
                *map(float, flags),
            ],
            args.device,
        )
        value, *values, ran = (v / world.size for v in summed[: 2 + len(names)])
        stopping, out_of_time, due = (v > 0 for v in summed[2 + len(names) :])
        ema = value if ema is None else 0.95 * ema + 0.05 * value
        last = {
            "step": step,
            "loss": round(value, 5),
            **{k: round(v, 5) for k, v in zip(names, values)},
            "lr": round(opt.param_groups[0]["lr"], 7),
            **(
                {"lr_fresh": round(opt.param_groups[-1]["lr"], 7)}
                if len(opt.param_groups) > 1
                else {}
            ),
            "grad_norm": round(gnorm, 4),
            "step_s": round(dt, 3),
            "elapsed_s": round(elapsed + time.perf_counter() - t_start, 1),
        }
        if step % args.log_every == 0 or step == steps:
            run.log(last)
        bar.update(1)
        bar.set_postfix(loss=f"{ema:.4f}", refresh=False)
        if due or step == stop_at or out_of_time or stopping:
            run.save(module, opt, step, elapsed + now - t_start, {**extra_state(), "fresh": fresh})
            t_ckpt = now
        if out_of_time:
            log.info("--max-minutes reached at step %d", step)
            break
        if stopping:
            break
    bar.close()
    if step == start:  # nothing ran (already done): keep the files as they are
        return {"step": step}
    run.save(
        module,
        opt,
        step,
        elapsed + time.perf_counter() - t_start,
        {**extra_state(), "fresh": fresh},
    )
    return last
