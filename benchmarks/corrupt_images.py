"""How much damage to a compressed image the decoder notices: the measurement behind the
"JPEG has no checksum" note in structvpr_ros/image_conversion.py.

A real CamVid frame is encoded as JPEG (OpenCV default quality) and PNG, then damaged
``--trials`` times per kind at a random offset in the middle half of the file: one bit
flipped, 64 bytes zeroed, 64 random bytes, truncated there. Per kind it counts decodes
that are rejected (``cv2.imdecode`` returns None, what ``compressed_to_rgb`` turns into an
error), that make libjpeg / libpng print a warning (stderr captured per decode), and that
come back visibly wrong (mean absolute difference to the undamaged decode > 1 level)
without either: the wrong pictures nothing can flag.

    .venv/bin/python benchmarks/corrupt_images.py --out benchmarks/results/corrupt_images.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from structvpr_core.io_utils import atomic_write_text
from structvpr_core.paths import shared_dir

KINDS = ("bit flip", "64 zeroed bytes", "64 random bytes", "truncated")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/corrupt_images.json")
    args = parser.parse_args()
    frame = shared_dir() / "data" / "camvid_sample" / "images" / "0001TP_008550.png"
    bgr = cv2.imread(str(frame), cv2.IMREAD_COLOR)
    rng = np.random.default_rng(args.seed)
    rows = []
    for codec in (".jpg", ".png"):
        data = cv2.imencode(codec, bgr)[1].tobytes()
        clean = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).astype(np.int16)
        for kind in KINDS:
            counts = {"rejected": 0, "warned": 0, "wrong_unflagged": 0}
            for _ in range(args.trials):
                decoded, warning = decode_capturing_stderr(damage(data, kind, rng))
                if decoded is None:
                    counts["rejected"] += 1
                    continue
                counts["warned"] += bool(warning)
                wrong = np.abs(decoded.astype(np.int16) - clean).mean() > 1.0
                counts["wrong_unflagged"] += bool(wrong and not warning)
            rows.append({"codec": codec[1:], "damage": kind, "trials": args.trials, **counts})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps({"frame": frame.name, "seed": args.seed, "rows": rows}, indent=2) + "\n")
    print(f"{'codec':>5} {'damage':>16} {'rejected':>9} {'warned':>7} {'wrong, no warning':>18}")
    for r in rows:
        print(f"{r['codec']:>5} {r['damage']:>16} {r['rejected']:>9} {r['warned']:>7} {r['wrong_unflagged']:>18}")
    return 0


def damage(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    pos = int(rng.integers(len(out) // 4, 3 * len(out) // 4))
    if kind == "bit flip":
        out[pos] ^= 1 << int(rng.integers(8))
    elif kind == "64 zeroed bytes":
        out[pos:pos + 64] = bytes(64)
    elif kind == "64 random bytes":
        out[pos:pos + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    else:
        del out[pos:]
    return bytes(out)


def decode_capturing_stderr(data: bytes) -> tuple[np.ndarray | None, str]:
    """cv2.imdecode with the C libraries' stderr (where libjpeg/libpng warn) captured."""
    with tempfile.TemporaryFile() as captured:
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        return decoded, captured.read().decode(errors="replace")


if __name__ == "__main__":
    raise SystemExit(main())
