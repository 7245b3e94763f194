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

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from structvpr_core.evaluation.feature_cache import cached_features
from structvpr_core.evaluation.missions import Mission, play_mission
from structvpr_core.loop_closure.candidates import LoopClosureConfig


def run_missions(models: list[str], missions: list[Mission], data_root: Path,
                 encode: Callable[[str, list[Path]], np.ndarray], config: LoopClosureConfig | None = None,
                 cache_dir: Path | None = None, log: Callable[[str], None] = print) -> list[dict]:
    """One result row per (model, mission). ``encode(model, paths)`` gives the descriptors (the caller
    caches them); ``config`` defaults to the shipped loop-closure defaults."""
    config = config or LoopClosureConfig()
    frames = {m.name: m.frames(data_root) for m in missions}
    features: dict[str, list | None] = {}
    for mission in missions:  # local features do not depend on the model: once per mission, cached
        features[mission.name] = None
        if config.verification != "off":
            paths = [f.path for f in frames[mission.name]]
            unique = sorted(set(paths), key=str)
            by_path = dict(zip(unique, cached_features(unique, config.geometry, cache_dir, label=mission.name)))
            features[mission.name] = [by_path[p] for p in paths]
    rows = []
    for spec in models:  # model by model: ``encode`` may drop a model's runtimes before the next
        for mission in missions:
            descriptors = encode(spec, [f.path for f in frames[mission.name]])
            start = time.perf_counter()
            run = play_mission(frames[mission.name], descriptors, config, features[mission.name])
            result = run.score(mission.revisit_radius, config.exclude_recent_s)
            log(f"[mission] {spec} on {mission.name}: {len(frames[mission.name])} frames played in "
                f"{time.perf_counter() - start:.1f} s")
            timings = np.array(run.verification_ms) if run.verification_ms else np.zeros(1)
            rows.append({"model": spec, "mission": mission.name, "split": mission.split,
                         "condition": mission.condition, "frames": len(frames[mission.name]),
                         "skipped_invalid": run.skipped, "verification_ms_mean": float(timings.mean()),
                         "verification_ms_p95": float(np.percentile(timings, 95)), **result})
    rows.sort(key=lambda r: [m.name for m in missions].index(r["mission"]))  # table: mission by mission
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
