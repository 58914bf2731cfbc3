"""The distributed context of a job, decided once at its start and passed to what needs it.

One process (rank 0 of world 1) unless launched by ``torchrun``: then DDP with gloo on CPU and
nccl on GPU, one device per local rank (nanoGPT's ``ddp_rank`` / ``master_process`` block).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

__all__ = ["DistContext", "init_distributed"]


@dataclass(frozen=True)
class DistContext:
    """Rank, world size and device of this process."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """The process that writes the run's shared files and reports (rank 0)."""
        return self.rank == 0

    def barrier(self) -> None:
        if dist.is_initialized():
            dist.barrier()

    def say(self, text: str) -> None:
        """One line per phase, on the main process only (progress bars are separate)."""
        if self.is_main:
            print(text, flush=True)

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: str | None = None) -> DistContext:
    """The context of this process; ``device`` (``cuda``, ``cuda:1``, ``cpu``) overrides the one
    chosen per local rank (default: CUDA when available)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    wants_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if wants_cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    chosen = torch.device("cpu")
    if wants_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        chosen = torch.device("cuda", local)
    return DistContext(rank, world, torch.device(device) if device else chosen)
