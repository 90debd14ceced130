"""Single-process or torchrun (DDP) execution: rank and device from the environment."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Runtime:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def device_problem(device: str) -> Optional[str]:
    """What is wrong with a ``--device`` value ('auto', 'cpu', 'cuda' or 'cuda:N', a CUDA device only where one
    is visible), in one line; None when nothing is."""
    if device in ("auto", "cpu"):
        return None
    try:
        dev = torch.device(device)
    except RuntimeError:
        dev = None
    if dev is None or dev.type != "cuda":
        return f"--device {device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'"
    if not torch.cuda.is_available():
        return (f"--device {device}: no CUDA device is visible to this process (torch {torch.__version__}, CUDA "
                f"build {torch.version.cuda or 'none'}); use --device cpu, or check the driver and CUDA_VISIBLE_DEVICES")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        return f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
    return None


def init_runtime(device: str = "auto") -> Runtime:
    """Reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set by torchrun (NCCL on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Runtime(rank, world, dev)


def all_reduce_sum(t: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    if runtime.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def shutdown(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
