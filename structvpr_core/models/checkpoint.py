"""Model checkpoints: weights + the architecture config that rebuilds them + a content hash.

File = ``torch.save`` of a plain dict (loadable with ``weights_only=True``):
``{"format", "config", "state_dict", "sha256", "meta"}``. Loading rebuilds the
model from ``config``, verifies the hash (a truncated or edited file is an error)
and checks the caller's expectations (branch, descriptor dim) with clear messages.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch

from structvpr_core.config import ConfigError, from_dict, to_dict
from structvpr_core.io_utils import atomic_write_bytes
from structvpr_core.models.branches import ModelConfig, build_model

FORMAT = "structvpr-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, corrupt, or does not fit what the caller needs."""


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | Path, model: torch.nn.Module, meta: dict | None = None, half: bool = False) -> str:
    """Atomically write ``model`` (which must carry ``.config: ModelConfig``); returns the hash."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if half:  # float weights only; BN counters stay integer
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    digest = state_dict_sha256(state)
    payload = {
        "format": FORMAT,
        "config": to_dict(model.config),
        "state_dict": state,
        "sha256": digest,
        "meta": meta or {},
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())
    return digest


def load_checkpoint(
    path: str | Path,
    expect_branch: str | None = None,
    expect_dim: int | None = None,
    map_location: str | torch.device = "cpu",
):
    """Rebuild the model stored at ``path``; returns ``(model, payload)`` (model in eval mode)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a StructVPR checkpoint (expected format '{FORMAT}')")
    state = payload["state_dict"]
    if state_dict_sha256(state) != payload["sha256"]:
        raise CheckpointError(f"{path}: content hash mismatch — the file is corrupt or was modified")
    try:
        config = from_dict(ModelConfig, payload["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: invalid architecture config: {e}") from None
    if expect_branch is not None and config.branch != expect_branch:
        raise CheckpointError(f"{path}: is a '{config.branch}' branch model, expected '{expect_branch}'")
    if expect_dim is not None and config.dim != expect_dim:
        raise CheckpointError(f"{path}: produces {config.dim}-d descriptors, expected {expect_dim}-d")
    model = build_model(config)
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the architecture: {e}") from None
    return model.to(map_location).eval(), payload
