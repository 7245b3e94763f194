"""Model checkpoints: weights + the architecture config that rebuilds them + a content hash.

File = ``torch.save`` of a plain dict (loadable with ``weights_only=True``):
``{"format", "config", "state_dict", "sha256", "meta"}``. ``sha256`` covers the
config and the weights (``meta`` is information only), so a truncated file, edited
weights or an edited input size are all refused. Loading checks the layout, rebuilds the
model from ``config``, verifies the hash and the caller's expectations (branch,
descriptor dim), each with a message that names the problem.

Format 1 files (hash over the weights only) are refused with the way out:
``python -m structvpr_core.models.checkpoint --upgrade FILE`` re-saves one as format 2,
weights untouched, after you have checked its config.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from pathlib import Path

import torch

from structvpr_core.config import ConfigError, from_dict, to_dict
from structvpr_core.io_utils import atomic_write_bytes
from structvpr_core.models.branches import ModelConfig
from structvpr_core.models.factory import build_model

FORMAT = "structvpr-checkpoint/2"
FORMAT_1 = "structvpr-checkpoint/1"  # hash over the weights only: refused, can be upgraded


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, corrupt, or does not fit what the caller needs."""


def content_sha256(config: dict, state: dict[str, torch.Tensor]) -> str:
    """sha256 of the architecture config (canonical JSON) and every tensor (name, dtype, shape, bytes)."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    _hash_tensors(h, state)
    return h.hexdigest()


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 of the weights alone: format 1's hash, and the DDP ranks' agreement check."""
    h = hashlib.sha256()
    _hash_tensors(h, state)
    return h.hexdigest()


def _hash_tensors(h, state: dict[str, torch.Tensor]) -> None:
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def save_checkpoint(path: str | Path, model: torch.nn.Module, meta: dict | None = None, half: bool = False) -> str:
    """Atomically write ``model`` (which must carry ``.config: ModelConfig``); returns the hash."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if half:  # float weights only; BN counters stay integer
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    return _write(path, to_dict(model.config), state, meta or {})


def _write(path: str | Path, config: dict, state: dict[str, torch.Tensor], meta: dict) -> str:
    digest = content_sha256(config, state)
    payload = {"format": FORMAT, "config": config, "state_dict": state, "sha256": digest, "meta": meta}
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
    payload = _read(path)
    if payload["format"] == FORMAT_1:
        raise CheckpointError(f"{path}: old checkpoint format 1, whose hash does not cover the architecture "
                              f"config; check its config, then re-save it with `python -m "
                              f"structvpr_core.models.checkpoint --upgrade {path}`")
    state = payload["state_dict"]
    if content_sha256(payload["config"], state) != payload["sha256"]:
        raise CheckpointError(f"{path}: content hash mismatch — the file is corrupt, or its weights or "
                              f"architecture config were modified")
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:  # would give NaN descriptors that faiss refuses frame by frame, naming no file
        raise CheckpointError(f"{path}: {len(broken)} weight tensors hold NaN or inf (e.g. '{broken[0]}'): "
                              f"a diverged training run? use an earlier checkpoint")
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


def _read(path: Path) -> dict:
    """The payload of a format 1 or 2 file, its layout checked (hash not yet)."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("format") not in (FORMAT, FORMAT_1):
        raise CheckpointError(f"{path}: not a StructVPR checkpoint (expected format '{FORMAT}')")
    missing = [k for k in ("config", "state_dict", "sha256") if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}")
    if not isinstance(payload["sha256"], str):
        raise CheckpointError(f"{path}: sha256 must be a hex string, got {type(payload['sha256']).__name__}")
    try:
        json.dumps(payload["config"])  # hashed as canonical JSON
        if not isinstance(payload["config"], dict):
            raise TypeError(type(payload["config"]).__name__)
    except TypeError as e:
        raise CheckpointError(f"{path}: config must be a mapping of plain values ({e})") from None
    state = payload["state_dict"]
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path}: state_dict must be a non-empty mapping of tensors")
    bad = [f"{k!r} ({type(v).__name__})" for k, v in state.items()
           if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: state_dict entries must be named tensors, not {', '.join(bad[:3])}")
    return payload


def upgrade_checkpoint(path: str | Path) -> str:
    """Re-save a format 1 file as format 2 in place (weights and config as they are); returns the new hash.

    Its old weights-only hash must still match: a corrupt file is not blessed with a new one.
    """
    path = Path(path)
    payload = _read(path)
    if payload["format"] == FORMAT:
        raise CheckpointError(f"{path}: already format 2")
    if state_dict_sha256(payload["state_dict"]) != payload["sha256"]:
        raise CheckpointError(f"{path}: content hash mismatch — the file is corrupt or was modified")
    return _write(path, payload["config"], payload["state_dict"], payload.get("meta") or {})


def set_input_rule(path: str | Path, pixels: int, second_pixels: int = 0, chosen_by: str = "") -> str:
    """Record an inference input rule (``ModelConfig.input_pixels`` / ``input_pixels_second``) in the
    checkpoint at ``path``, in place and atomically, weights untouched; returns the new hash.

    The file must verify first; the rule is validated by rebuilding the config; ``meta`` keeps the
    previous hash and ``chosen_by`` (where the rule was chosen), since the hash covers the config.
    """
    path = Path(path)
    _, payload = load_checkpoint(path)  # verifies the hash and the architecture
    config = {**payload["config"], "input_pixels": int(pixels), "input_pixels_second": int(second_pixels)}
    try:
        from_dict(ModelConfig, config)
    except ConfigError as e:
        raise CheckpointError(f"{path}: input rule refused: {e}") from None
    meta = {**(payload.get("meta") or {}), "input_rule_set_on_sha256": payload["sha256"],
            "input_rule_chosen_by": chosen_by}
    return _write(path, config, payload["state_dict"], meta)


def export_half(src: str | Path, dst: str | Path) -> str:
    """Write a float16 copy of ``src`` (what ships in training/checkpoints/); meta notes the source hash."""
    model, payload = load_checkpoint(src)
    meta = {**(payload.get("meta") or {}), "exported_fp16_from_sha256": payload["sha256"]}
    return save_checkpoint(dst, model, meta=meta, half=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="checkpoint maintenance: format upgrade, float16 export")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--upgrade", nargs="+", metavar="FILE",
                        help="re-save format 1 checkpoints in place as format 2 (hash covers config)")
    action.add_argument("--export-fp16", nargs=2, metavar=("SRC", "DST"), help="write a float16 copy of SRC to DST")
    action.add_argument("--set-input-rule", nargs="+", metavar="ARG",
                        help="FILE PIXELS [SECOND_PIXELS]: record the inference pixel budget (a second one: "
                             "multi-scale) in FILE, in place, atomically")
    parser.add_argument("--chosen-by", default="", help="with --set-input-rule: where the rule was chosen (kept in meta)")
    args = parser.parse_args(argv)
    try:
        if args.set_input_rule:
            if len(args.set_input_rule) not in (2, 3) or not all(a.isdigit() for a in args.set_input_rule[1:]):
                raise CheckpointError(f"--set-input-rule takes FILE PIXELS [SECOND_PIXELS], got {args.set_input_rule}")
            file, *budgets = args.set_input_rule
            print(f"{file}: input rule {budgets}, sha256 {set_input_rule(file, *map(int, budgets), chosen_by=args.chosen_by)}")
        if args.export_fp16:
            print(f"{args.export_fp16[1]}: float16, sha256 {export_half(*args.export_fp16)}")
        for path in args.upgrade or []:
            print(f"{path}: format 2, sha256 {upgrade_checkpoint(path)}")
    except (CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
