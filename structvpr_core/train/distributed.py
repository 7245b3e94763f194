"""Multi-process training under torchrun: NCCL on GPU, gloo on CPU.

Launched by ``torchrun --nproc_per_node N -m structvpr_core.train.cli ...`` the
environment carries RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; a
plain ``structvpr train`` run is world size 1 and uses none of this.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from structvpr_core.runtime.network import pick_device


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sync_buffers(self, module: torch.nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm running stats) to every rank.

        DDP broadcasts buffers at the start of each forward, so after the last step of
        an epoch every rank still holds stats updated by its own batch; validation,
        the mining cache and the saved weights must all see rank 0's.
        """
        if self.enabled:
            for buf in module.buffers():
                dist.broadcast(buf, 0)

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """DDP-wrap for training; gradients are averaged across ranks, BN buffers follow rank 0."""
        if not self.enabled:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)


def setup(device: str = "auto") -> DistContext:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistContext(0, 1, pick_device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    return DistContext(rank, world_size, dev)


def gather_sync_report(ctx: DistContext, modules: dict[str, torch.nn.Module], info: dict) -> list[dict]:
    """Every rank's weight hash (+ ``info``), gathered on all ranks; raises if the replicas differ."""
    from structvpr_core.models.checkpoint import state_dict_sha256

    mine = {"rank": ctx.rank, "pid": os.getpid(), "backend": dist.get_backend() if ctx.enabled else None,
            "sha256": {name: state_dict_sha256(m.state_dict()) for name, m in modules.items()}, **info}
    if not ctx.enabled:
        return [mine]
    reports: list = [None] * ctx.world_size
    dist.all_gather_object(reports, mine)
    if any(r["sha256"] != reports[0]["sha256"] for r in reports):
        raise RuntimeError(f"DDP replicas diverged: weight hashes differ across ranks: {reports}")
    return reports


def teardown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
