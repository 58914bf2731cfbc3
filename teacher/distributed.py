"""The distributed context of a job, decided once at its start and passed to what needs it.

Labelling (:func:`teacher.cache.build_label_cache`) and training (``distill``) share it, so rank
and world size are resolved in one place. One process (rank 0 of world 1) unless launched by
``torchrun``: then DDP with gloo on CPU and nccl on GPU, one device per local rank (nanoGPT's
``ddp_rank`` / ``master_process`` block).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

__all__ = ["DistContext", "init_distributed"]


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return default if value is None else int(value)
    except ValueError:
        raise ValueError(f"env {name}={value!r} is not an integer; launch with torchrun or unset it") from None


@dataclass(frozen=True)
class DistContext:
    """Rank, world size and device of this process."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self) -> None:
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f"rank={self.rank} world={self.world}: need world >= 1 and 0 <= rank < world")

    @classmethod
    def from_env(cls, device: torch.device | str = "cpu") -> DistContext:
        """This process's rank and world: torch.distributed's when a process group is initialised,
        else ``torchrun``'s ``RANK`` / ``WORLD_SIZE``, else 0 of 1. Starts no process group."""
        if dist.is_available() and dist.is_initialized():
            rank, world = dist.get_rank(), dist.get_world_size()
        else:
            rank, world = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
        return cls(rank, world, torch.device(device))

    @property
    def is_main(self) -> bool:
        """The process that writes the run's shared files and reports (rank 0)."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (a no-op without a process group)."""
        if dist.is_available() and dist.is_initialized():
            dist.barrier()

    def say(self, text: str) -> None:
        """One line per phase, on the main process only (progress bars are separate)."""
        if self.is_main:
            print(text, flush=True)

    def close(self) -> None:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: str | None = None) -> DistContext:
    """The context of this process, starting the process group under ``torchrun``; ``device``
    (``cuda``, ``cuda:1``, ``cpu``) overrides the one chosen per local rank (default: CUDA when
    available)."""
    wants_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if _env_int("WORLD_SIZE", 1) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if wants_cuda else "gloo")
    chosen = torch.device("cpu")
    if wants_cuda:
        local = _env_int("LOCAL_RANK", 0)
        torch.cuda.set_device(local)
        chosen = torch.device("cuda", local)
    return DistContext.from_env(torch.device(device) if device else chosen)
