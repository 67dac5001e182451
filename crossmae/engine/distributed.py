"""Process-group setup for torchrun (single or multi node), SLURM/submitit, or one plain process."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class DeviceError(ValueError):
    """The requested device does not exist here, or the launcher's environment is malformed."""


def _env_int(*names: str, default: int) -> int:
    for name in names:
        if name in os.environ:
            try:
                return int(os.environ[name])
            except ValueError:
                raise DeviceError(f"environment variable {name}={os.environ[name]!r} is not an integer") from None
    return default


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> this process's GPU if there is one, else the CPU. An explicit device is checked
    here, before anything runs: a GPU that is not there is one error line, not a CUDA traceback."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise DeviceError(f"device={device!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device={device} but no CUDA GPU is visible (torch {torch.__version__}, CUDA build "
                              f"{torch.version.cuda or 'none'}); use device=cpu or device=auto")
        index = local_rank if dev.index is None else dev.index
        count = torch.cuda.device_count()
        if index >= count:
            raise DeviceError(f"device={device}: GPU {index} asked for (local rank {local_rank}), but only {count} "
                              f"visible (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device={device} but MPS is not available here; use device=cpu or device=auto")
    return dev


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group described by the environment (torchrun's RANK/WORLD_SIZE/LOCAL_RANK,
    or SLURM's SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID); a single process needs nothing."""
    rank = _env_int("RANK", "SLURM_PROCID", default=0)
    world_size = _env_int("WORLD_SIZE", "SLURM_NTASKS", default=1)
    local_rank = _env_int("LOCAL_RANK", "SLURM_LOCALID", default=0)
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world_size,
                                **({"device_id": dev} if dev.type == "cuda" else {}))
    return DistInfo(rank, world_size, local_rank, dev)


def get_rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes (in place and returned); identity in one process."""
    if dist.is_initialized():
        dist.all_reduce(t)
    return t


def cleanup() -> None:
    if dist.is_initialized():
        dist.barrier()  # no rank tears down while another is still talking (gloo on torch 2.5 hangs otherwise)
        dist.destroy_process_group()
