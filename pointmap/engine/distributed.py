"""torchrun / DDP plumbing: one process per device, NCCL on CUDA, gloo on CPU; rank 0 writes.

Nothing home-made: ``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR, this module calls
``torch.distributed.init_process_group`` with them. A plain ``python tools/...`` run is world size 1
and never touches torch.distributed.
"""
from __future__ import annotations

import os
from typing import Dict, Iterator, List, Optional

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from ..errors import UserError

__all__ = [
    "init_distributed", "is_distributed", "get_rank", "get_world_size", "is_main_process", "barrier",
    "all_reduce_sum", "all_reduce_mean", "gather_sums", "add_sums", "broadcast_buffers", "resolve_device",
    "ShardSampler", "shutdown",
]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: this process's CUDA device (LOCAL_RANK under torchrun) when CUDA is there, else CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: CUDA is not available on this machine")
        if dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
    return dev


def init_distributed(device: torch.device) -> bool:
    """Join the process group torchrun describes (if any). Returns whether the run is distributed."""
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend=backend, **kwargs)
    return True


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    return all_reduce_sum(t) / get_world_size() if is_distributed() else t


def gather_sums(sums: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Per-process sums (CPU tensors, the same keys on every rank) added up over all processes; as they
    are in one process."""
    if not is_distributed():
        return sums
    gathered: List[Optional[Dict[str, torch.Tensor]]] = [None] * get_world_size()
    dist.all_gather_object(gathered, sums)
    total: Dict[str, torch.Tensor] = {}
    for part in gathered:
        add_sums(total, part)
    return total


def add_sums(total: Dict[str, torch.Tensor], part: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``total[k] += part[k]`` for every key (new keys start at ``part``'s value); returns ``total``."""
    for k, v in part.items():
        total[k] = total[k] + v if k in total else v
    return total


def wrap_ddp(model: torch.nn.Module, device: torch.device, find_unused_parameters: bool = False) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when this process is one of several (on its CUDA device); else
    ``model`` itself."""
    if get_world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused_parameters)


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank. DDP broadcasts them at the
    start of each forward, so after the last step of an epoch each rank holds its own update; this makes
    evaluation and checkpoints the same on every rank."""
    if is_distributed():
        for buf in module.buffers():
            dist.broadcast(buf, src=src)


class ShardSampler(Sampler):
    """Evaluation sampler: rank r takes indices r, r+W, r+2W, ... — no padding, so no sample counts twice
    when the per-rank sums are added up (unlike DistributedSampler, which repeats samples to even out)."""

    def __init__(self, length: int, rank: Optional[int] = None, world_size: Optional[int] = None):
        self.length = length
        self.rank = get_rank() if rank is None else rank
        self.world_size = get_world_size() if world_size is None else world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


def shutdown() -> None:
    """Leave the process group (tools call it once at exit; harmless without torchrun)."""
    if is_distributed():
        dist.destroy_process_group()
