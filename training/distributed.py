"""The process group under torchrun (DDP, one or many nodes), or a single process; the device each rank uses."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist


@dataclass(frozen=True)
class Distributed:
    """This process's place: rank, world size, and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            torch_dist.barrier()

    def close(self) -> None:
        if self.world_size > 1:
            torch_dist.destroy_process_group()


def init_distributed(device: str) -> Distributed:
    """Join torchrun's process group when WORLD_SIZE > 1 (NCCL on GPUs, gloo on CPUs); else a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device is visible (use --device cpu)")
    if world_size == 1:
        return Distributed(0, 1, torch.device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        torch_dist.init_process_group("nccl")
        return Distributed(rank, world_size, torch.device("cuda", local_rank))
    torch_dist.init_process_group("gloo")
    return Distributed(rank, world_size, torch.device(device))
