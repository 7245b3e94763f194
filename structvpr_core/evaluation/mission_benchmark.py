"""Missions on the scoreboard: every model played through each mission at the node's defaults.

For each model and mission (``evaluation.missions``): the frames are encoded with the model
at its own input rule (what the node feeds it), local features are extracted once per
image (they do not depend on the model; cached on disk), and the mission is played in
mapping mode through ``LoopDetector`` with the shipped loop-closure defaults
(``LoopClosureConfig()``, the same values as ``config/structvpr.yaml``; a test keeps them
equal). Reported per mission: recall@100%P and PR-AUC of the final score, and what the
detector *published* at the defaults: loop closures, wrong ones (on new places among
them), precision and recall.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from structvpr_core.data.images import read_rgb
from structvpr_core.evaluation.missions import Mission, play_mission
from structvpr_core.io_utils import atomic_write
from structvpr_core.loop_closure.candidates import LoopClosureConfig
from structvpr_core.loop_closure.local_features import FeatureExtractor, LocalFeatures
from structvpr_core.progress import progress

LOCAL_FEATURE_SOURCES = ("local_features.py", "xfeat_features.py")
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def features_key(config: LoopClosureConfig) -> str:
    """What extracted local features depend on: the extractor's settings and source (and XFeat's network)."""
    g = config.geometry
    h = hashlib.sha256(f"{g.features}|{g.max_features}|{g.max_image_width}".encode())
    for name in LOCAL_FEATURE_SOURCES:
        h.update((PACKAGE_ROOT / "loop_closure" / name).read_bytes())
    h.update((PACKAGE_ROOT / "models" / "xfeat.py").read_bytes())
    return h.hexdigest()[:16]


def cached_features(paths: list[Path], config: LoopClosureConfig, cache_dir: Path | None,
                    label: str = "") -> list[LocalFeatures]:
    """Local features of every image, from one .npz per (image list, extractor) when cached."""
    kind = config.geometry.features
    key = hashlib.sha256("\n".join([features_key(config), *map(str, paths)]).encode()).hexdigest()[:24]
    cache_file = None if cache_dir is None else cache_dir / f"features_{key}.npz"
    if cache_file is not None and cache_file.is_file():
        z = np.load(cache_file, allow_pickle=False)
        offsets, sizes = z["offsets"], z["sizes"]
        return [LocalFeatures(z["keypoints"][a:b], z["descriptors"][a:b], tuple(int(v) for v in sizes[i]), kind)
                for i, (a, b) in enumerate(zip(offsets[:-1], offsets[1:]))]
    extractor = FeatureExtractor.from_config(config.geometry)
    out = [extractor(read_rgb(p)) for p in progress(paths, desc=f"local features {label}".strip(), unit="img")]
    if cache_file is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        offsets = np.cumsum([0] + [len(f) for f in out])
        arrays = {"keypoints": np.concatenate([f.keypoints for f in out]),
                  "descriptors": np.concatenate([f.descriptors for f in out]),
                  "offsets": offsets, "sizes": np.array([f.image_size for f in out], np.int64)}
        atomic_write(cache_file, lambda tmp: _savez(tmp, arrays))
    return out


def _savez(tmp: Path, arrays: dict) -> None:
    with open(tmp, "wb") as f:  # np.savez on a path would append .npz to the temporary name
        np.savez(f, **arrays)


def run_missions(models: list[str], missions: list[Mission], data_root: Path,
                 encode: Callable[[str, list[Path]], np.ndarray], config: LoopClosureConfig | None = None,
                 cache_dir: Path | None = None, log: Callable[[str], None] = print) -> list[dict]:
    """One result row per (model, mission). ``encode(model, paths)`` gives the descriptors (the caller
    caches them); ``config`` defaults to the shipped loop-closure defaults."""
    config = config or LoopClosureConfig()
    rows = []
    for mission in missions:
        frames = mission.frames(data_root)
        paths = [f.path for f in frames]
        features = None
        if config.verification != "off":
            unique = sorted(set(paths), key=str)
            by_path = dict(zip(unique, cached_features(unique, config, cache_dir, label=mission.name)))
            features = [by_path[p] for p in paths]
        for spec in models:
            descriptors = encode(spec, paths)
            start = time.perf_counter()
            run = play_mission(frames, descriptors, config, features)
            result = run.score(mission.revisit_radius, config.exclude_recent_s)
            log(f"[mission] {spec} on {mission.name}: {len(frames)} frames played in "
                f"{time.perf_counter() - start:.1f} s")
            timings = np.array(run.verification_ms) if run.verification_ms else np.zeros(1)
            rows.append({"model": spec, "mission": mission.name, "split": mission.split,
                         "condition": mission.condition, "frames": len(frames), "skipped_invalid": run.skipped,
                         "verification_ms_mean": float(timings.mean()),
                         "verification_ms_p95": float(np.percentile(timings, 95)), **result})
    return rows


def missions_table(rows: list[dict], labels: dict[str, str]) -> str:
    lines = ["| mission | model | revisits / queries | recall@100%P | PR-AUC | published | wrong (on new places) "
             "| precision | recall |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        op = r["published"]
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(f"| {r['mission']} | {labels.get(r['model'], r['model'])} | {r['queries_with_revisit']} / "
                     f"{r['queries']} | {fmt(r.get('recall_at_100_precision'))} | {fmt(r.get('pr_auc'))} | "
                     f"{op['loop_closures']} | {op['false_positives']} ({op['false_positives_on_new_places']}) | "
                     f"{fmt(op['precision'])} | {fmt(op['recall'])} |")
    return "\n".join(lines)
