"""Data-parallel training on PyTorch's own engine: a stage started by torchrun
(`torchrun --nproc_per_node N "$(command -v videopoet)" train STAGE ...`) runs one process per
device, each on its share of every global batch.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; `start` joins the process group (NCCL on CUDA,
gloo on the CPU) and puts the rank on `cuda:LOCAL_RANK`. The stage's module is wrapped in
DistributedDataParallel, or for the LM with `--fsdp` sharded with FSDP (`fully_shard` on each
transformer block and on the whole step), so an LM too large for one device's memory with its
optimizer state still trains. `--batch` stays the global batch: each rank takes its slice of
the examples a step draws (`shard`), so N ranks see the examples one process would. Rank 0
alone writes the run folder (config, checkpoints, JSONL log, progress bar); checkpoints hold
full, unsharded state, so a checkpoint written under FSDP loads in one process and back.

Outside torchrun (or with WORLD_SIZE 1) every function here is a no-op.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from models.train.errors import TrainingError

log = logging.getLogger(__name__)

# How long a rank waits for the others at a collective: rank 0 may tokenize the LM's clips
# (hours for a large --clips) while the rest wait at the barrier after it.
TIMEOUT = datetime.timedelta(hours=4)


@dataclass
class World:
    """This process's place among the ranks of a run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    fsdp: bool = False  # the stage's module is sharded (checkpoints gather it)

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes the run folder."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


_world = World()


def world() -> World:
    return _world


def environment() -> World:
    """RANK, WORLD_SIZE and LOCAL_RANK as torchrun sets them (a single process without them)."""
    try:
        return World(
            rank=int(os.environ.get("RANK", "0")),
            size=int(os.environ.get("WORLD_SIZE", "1")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )
    except ValueError:
        raise TrainingError(
            "RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them)"
        ) from None


def start(device: str) -> str:
    """Join torchrun's process group when there is one; returns the device this rank trains on
    (`device` as resolved, or cuda:LOCAL_RANK)."""
    global _world
    env = environment()
    if not env.distributed:
        _world = World()
        return device
    import torch.distributed as dist

    if device.startswith("cuda"):
        if env.local_rank >= torch.cuda.device_count():
            raise TrainingError(
                f"LOCAL_RANK {env.local_rank} has no GPU: this node has "
                f"{torch.cuda.device_count()}; give torchrun --nproc_per_node at most that"
            )
        torch.cuda.set_device(env.local_rank)
        device, backend = f"cuda:{env.local_rank}", "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=TIMEOUT)
    _world = env
    log.info("rank %d of %d (%s, %s)", env.rank, env.size, backend, device)
    return device


def stop() -> None:
    """Leave the process group (every exit path of a stage, errors included)."""
    global _world
    _world = World()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def barrier() -> None:
    if _world.distributed:
        torch.distributed.barrier()


def local_batch(batch: int, flag: str = "--batch") -> int:
    """This rank's share of a global batch; refuses a batch the ranks cannot share evenly."""
    n = _world.size
    if batch % n:
        raise TrainingError(
            f"{flag} {batch} is the global batch, split evenly across the {n} processes: "
            f"give a multiple of {n}"
        )
    return batch // n


def shard(batch: int) -> range:
    """The indices of a global batch of `batch` examples that this rank takes."""
    per = local_batch(batch)
    return range(_world.rank * per, (_world.rank + 1) * per)


def all_sum(values: list[float], device: str) -> list[float]:
    """The sum over ranks of each value (one collective); the values themselves alone."""
    if not _world.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


class StepModule(torch.nn.Module):
    """A stage's module with its step as its forward: DDP and FSDP act on a module's forward,
    and a step calls its module's parts (an encoder, the logits) as it needs them."""

    def __init__(self, module: torch.nn.Module, step_fn: Callable):
        super().__init__()
        self.module = module
        self.step_fn = step_fn

    def forward(self, rng, step):
        return self.step_fn(rng, step)


def wrap(module: torch.nn.Module, step_fn: Callable, device: str, fsdp: bool = False) -> Callable:
    """`step_fn` run through DDP (or FSDP) over `module` when distributed, else itself.

    FSDP shards each block of `module.layers` (the LM's transformer blocks) and the rest as the
    root; it is done in place, so `module` holds sharded parameters afterwards (build the
    optimizer after this).
    """
    if not _world.distributed:
        return step_fn
    step = StepModule(module, step_fn)
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        layers = getattr(module, "layers", None)
        if layers is None:
            raise TrainingError("--fsdp shards the LM's transformer blocks; this stage has none")
        for block in layers:
            fully_shard(block)
        fully_shard(step)
        _world.fsdp = True
        return step
    from torch.nn.parallel import DistributedDataParallel

    ids = [torch.device(device).index] if device.startswith("cuda") else None
    # find_unused_parameters: a step may leave parts unused (the LM's caption path in a task
    # without text, the encoder of a --decoder-only run is frozen and left out anyway)
    return DistributedDataParallel(step, device_ids=ids, find_unused_parameters=True)


def full_state(module: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """The module's and optimizer's whole state, as one process keeps it (optimizer state keyed
    by parameter index). Under FSDP a collective: every rank calls it, rank 0 gets the state."""
    if not _world.fsdp:
        return module.state_dict(), opt.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model = get_model_state_dict(module, options=options)
    optim = get_optimizer_state_dict(module, opt, options=options)
    if not _world.main:
        return {}, {}
    index = {name: i for i, (name, _) in enumerate(module.named_parameters())}
    return model, {
        "state": {index[k]: v for k, v in optim["state"].items()},
        "param_groups": [
            {**g, "params": [index[p] for p in g["params"]]} for g in optim["param_groups"]
        ],
    }


def load_optimizer(module: torch.nn.Module, opt: torch.optim.Optimizer, state: dict) -> None:
    """Optimizer state as `full_state` gives it, into `opt` (sharded under FSDP)."""
    if not _world.fsdp:
        opt.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = [name for name, _ in module.named_parameters()]
    by_name = {
        "state": {names[i]: v for i, v in state["state"].items()},
        "param_groups": [
            {**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]
        ],
    }
    set_optimizer_state_dict(module, opt, by_name, options=StateDictOptions(full_state_dict=True))
