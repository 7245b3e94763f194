"""The map database: global descriptors in a faiss index plus one record per keyframe.

A keyframe record holds its id (int64, sequential from 0), capture stamp (ns), camera
frame id, optional pose (x, y, z, qx, qy, qz, qw; a NaN row when unknown), optional
local features (``local_features.LocalFeatures``: keypoints, descriptors, image size, so
geometric verification still works after a reload) and an optional ``source`` string
(the image file or bag message the keyframe came from, for humans and ground truth).
A map holds one feature kind (``feature_kind``: orb or xfeat): adding features of
another kind is refused, and the node refuses a map whose kind is not its
``verification_features``. XFeat keyframes store float16 descriptors (1024 keypoints:
128 KiB + 8 KiB of float32 keypoints; float16 keypoints would round to 0.5 px steps above
512 px, 1 px steps above 1024 px).

The map remembers which model made its descriptors (``ModelIdentity``): descriptors of
two different networks live in unrelated spaces, so loading a map with another model
is refused with ``MapMismatchError`` instead of returning meaningless matches.

On disk a map is a directory::

    index.faiss     DescriptorIndex file (its own content hash)
    keyframes.npz   ids, stamps_ns, poses, frame_ids, sources (no pickled objects)
    features.npz    concatenated keypoints/descriptors + per-keyframe offsets + kind
                    (maps saved before kinds existed have no kind: orb)
    meta.json       format version, model identity, counts, sha256 of the files above

``save`` writes a sibling temporary directory, fsyncs it, and only then swaps it in
with renames, so a crash leaves either the previous map or the new one, never a half
map. A crash mid-save may leave a ``.NAME.saving-*`` directory beside the map (never
read); a crash between the two renames leaves no map at the path and the previous one
at ``.NAME.previous-*``. ``open_map`` (the node's start-up decision) refuses that state
with the recovery step, and removes such leftovers once the map at the path is intact,
as ``save`` does. No ROS here: the node, the CLI tools and offline evaluation all share this class.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from structvpr_core.loop_closure.local_features import DESCRIPTOR_LAYOUTS, LocalFeatures
from structvpr_core.io_utils import file_sha256
from structvpr_core.retrieval.index import DescriptorIndex, IndexConfig
from structvpr_core.retrieval.sequence import similarity_row

FORMAT = "structvpr-map/1"
FILES = ("index.faiss", "keyframes.npz", "features.npz")
POSE_FIELDS = ("x", "y", "z", "qx", "qy", "qz", "qw")
# tf2's tolerance: a quaternion whose squared norm is off by more than this is not a rotation (the
# odometry input's rule, and the map loader's)
QUATERNION_NORM_TOLERANCE = 1e-2


class MapError(ValueError):
    """A map directory is missing, corrupt or inconsistent."""


class MapMismatchError(MapError):
    """A map was built with a different model than the one trying to use it."""


@dataclass(frozen=True)
class ModelIdentity:
    """Which network made a set of descriptors.

    Two identities are compatible when their dims and input rules agree (the same weights fed
    640x480 or 64x32 images give unrelated descriptors: ``input_size`` a fixed size,
    ``input_pixels`` a pixel budget at the image's aspect) and their checkpoints do: if either
    names a checkpoint hash, both must name the same one (a renamed or moved checkpoint is still
    the same model, a file replaced in place is not); without hashes (baselines) the names must agree.
    """

    name: str
    dim: int
    checkpoint_sha256: str | None = None
    input_size: tuple[int, int] | None = None  # (width, height) the network is fed, when fixed
    input_pixels: int = 0  # the pixel budget of a budget rule (input_size None); maps before it: 0
    input_pixels_second: int = 0  # a multi-scale rule's second budget

    def __post_init__(self):
        if not self.name:
            raise ValueError("model identity needs a non-empty name")
        if int(self.dim) < 1:
            raise ValueError(f"model identity dim must be >= 1, got {self.dim}")
        if self.input_size is not None:
            object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))

    @classmethod
    def of_encoder(cls, encoder) -> "ModelIdentity":
        """Identity of a ``structvpr_core.runtime.encoder.load_encoder`` result: its name, dim, input
        rule and, for a checkpoint (however it was named), the checkpoint's content hash."""
        rule = getattr(encoder, "input_rule", None)  # NetworkEncoder; raw-pixel has its own fixed grid
        return cls(encoder.name, int(encoder.dim), getattr(encoder, "checkpoint_sha256", None),
                   rule.size if rule is not None else None, rule.pixels if rule is not None else 0,
                   rule.second_pixels if rule is not None else 0)

    def compatible_with(self, other: "ModelIdentity") -> bool:
        if ((self.dim, self.input_size, self.input_pixels, self.input_pixels_second)
                != (other.dim, other.input_size, other.input_pixels, other.input_pixels_second)):
            return False
        if self.checkpoint_sha256 or other.checkpoint_sha256:
            return self.checkpoint_sha256 == other.checkpoint_sha256
        return self.name == other.name

    def describe(self) -> str:
        sha = f", checkpoint sha256 {self.checkpoint_sha256[:12]}" if self.checkpoint_sha256 else ""
        size = f", input {self.input_size[0]}x{self.input_size[1]}" if self.input_size else ""
        size += f", input ~{self.input_pixels} px at the image's aspect" if self.input_pixels else ""
        size += f" + ~{self.input_pixels_second} px (multi-scale)" if self.input_pixels_second else ""
        return f"'{self.name}' ({self.dim}-d{size}{sha})"

    def to_json(self) -> dict:
        return {"name": self.name, "dim": int(self.dim), "checkpoint_sha256": self.checkpoint_sha256,
                "input_size": list(self.input_size) if self.input_size else None,
                "input_pixels": int(self.input_pixels), "input_pixels_second": int(self.input_pixels_second)}


@dataclass(frozen=True)
class Keyframe:
    id: int
    stamp_ns: int
    frame_id: str
    pose: np.ndarray | None  # (7,) float64 x y z qx qy qz qw, None when unknown
    features: LocalFeatures | None
    source: str = ""


class MapDatabase:
    def __init__(self, model: ModelIdentity, index_config: IndexConfig | None = None):
        self.model = model
        self._index_config = index_config or IndexConfig()
        # the node may query from one callback thread while another adds or saves
        self._lock = threading.RLock()
        self.reset()

    # --- building ---------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every keyframe; ids start again at 0."""
        with self._lock:
            self.index = DescriptorIndex(self.model.dim, self._index_config)
            self._set_records(np.empty(0, np.int64), np.empty((0, 7)), [], [], [])

    def _set_records(self, stamps, poses, frame_ids, sources, features) -> None:
        # stamps/poses live in arrays with spare capacity (doubling) so add() is amortised
        # O(1); the public properties return views of the filled part.
        self._count = len(stamps)
        capacity = max(64, self._count)
        self._stamps = np.zeros(capacity, np.int64)
        self._poses = np.full((capacity, 7), np.nan)
        self._stamps[: self._count] = stamps
        self._poses[: self._count] = poses
        self._frame_ids: list[str] = list(frame_ids)
        self._sources: list[str] = list(sources)
        self._features: list[LocalFeatures | None] = list(features)
        self._feature_kind = next((f.kind for f in self._features if f is not None), None)

    def train(self, descriptors: np.ndarray) -> None:
        """Fit an ivfpq index before the first ``add`` (no-op for the default flat index)."""
        self.index.train(descriptors)

    def add(self, descriptor: np.ndarray, stamp_ns: int, frame_id: str, pose=None,
            features: LocalFeatures | None = None, source: str = "") -> int:
        """Insert one keyframe; returns its id."""
        return int(self.add_batch(np.asarray(descriptor)[None] if np.ndim(descriptor) == 1 else descriptor,
                                  [stamp_ns], [frame_id], None if pose is None else [pose],
                                  [features], [source])[0])

    def add_batch(self, descriptors: np.ndarray, stamps_ns, frame_ids, poses=None,
                  features=None, sources=None) -> np.ndarray:
        """Insert N keyframes at once (one faiss call); returns their ids.

        ``poses``: None, or N rows of 7 numbers / None (unknown). ``features``: None or
        N ``LocalFeatures`` / None. ``sources``: None or N strings.
        """
        descriptors = np.asarray(descriptors)
        n = len(descriptors)
        stamps = [int(s) for s in stamps_ns]
        frame_ids = [str(f) for f in frame_ids]
        poses = [None] * n if poses is None else list(poses)
        features = [None] * n if features is None else list(features)
        sources = [""] * n if sources is None else [str(s) for s in sources]
        lengths = {"stamps": len(stamps), "frame_ids": len(frame_ids), "poses": len(poses),
                   "features": len(features), "sources": len(sources)}
        wrong = {k: v for k, v in lengths.items() if v != n}
        if wrong:
            raise ValueError(f"add_batch: {n} descriptors but {wrong}")
        pose_rows = np.array([_pose_row(p) for p in poses], np.float64).reshape(n, 7)
        for f in features:
            if f is not None and not isinstance(f, LocalFeatures):
                raise ValueError(f"features must be LocalFeatures or None, got {type(f).__name__}")
        kinds = {f.kind for f in features if f is not None}
        if n and descriptors.ndim == 2 and descriptors.shape[1] != self.model.dim:
            raise ValueError(f"descriptor dim {descriptors.shape[1]} does not match the map's model "
                             f"{self.model.describe()}")
        with self._lock:
            if len(kinds) > 1 or (kinds and self._feature_kind not in (None, *kinds)):
                held = f"the map holds {self._feature_kind} features" if self._feature_kind else "one batch"
                raise ValueError(f"add_batch: {held}, got {sorted(kinds)} features: a map keeps one "
                                 f"local-feature kind (build-map --with-features --features KIND)")
            start, end = self._count, self._count + n
            ids = np.arange(start, end, dtype=np.int64)
            self.index.add(descriptors, ids)  # validates shape, finiteness, L2 norm
            if end > len(self._stamps):  # grow into new arrays; views handed out stay valid
                capacity = max(end, 2 * len(self._stamps))
                self._stamps = np.concatenate([self._stamps, np.zeros(capacity - len(self._stamps), np.int64)])
                self._poses = np.concatenate([self._poses, np.full((capacity - len(self._poses), 7), np.nan)])
            self._stamps[start:end] = stamps
            self._poses[start:end] = pose_rows
            self._frame_ids.extend(frame_ids)
            self._sources.extend(sources)
            self._features.extend(features)
            self._feature_kind = self._feature_kind or next(iter(kinds), None)
            self._count = end
        return ids

    # --- reading ----------------------------------------------------------------------
    def __len__(self) -> int:
        return self._count

    @property
    def stamps_ns(self) -> np.ndarray:
        """(N,) int64 capture stamps (read-only view)."""
        view = self._stamps[: self._count]
        view.flags.writeable = False
        return view

    @property
    def poses(self) -> np.ndarray:
        """(N, 7) float64 x y z qx qy qz qw, NaN rows where unknown (read-only view)."""
        view = self._poses[: self._count]
        view.flags.writeable = False
        return view

    @property
    def feature_kind(self) -> str | None:
        """The local-feature kind of the map's keyframes (orb | xfeat), None when none has features."""
        return self._feature_kind

    def feature_bytes_per_keyframe(self) -> float:
        """Mean bytes of local features (keypoints + descriptors) per keyframe that has them."""
        sizes = [f.nbytes for f in self._features if f is not None]
        return float(np.mean(sizes)) if sizes else 0.0

    def keyframe(self, keyframe_id: int) -> Keyframe:
        i = int(keyframe_id)
        with self._lock:
            if not 0 <= i < self._count:
                raise KeyError(f"no keyframe with id {keyframe_id} (map has ids 0..{self._count - 1})")
            pose = self._poses[i].copy()
            return Keyframe(i, int(self._stamps[i]), self._frame_ids[i],
                            None if np.isnan(pose).any() else pose, self._features[i], self._sources[i])

    def query(self, descriptor: np.ndarray, k: int, exclude_newer_than_ns: int | None = None) -> list[tuple[int, float]]:
        """Top-``k`` keyframes by cosine similarity, best first, as ``(id, score)``.

        ``exclude_newer_than_ns`` drops keyframes stamped later than that time (a robot
        always matches the frames it just saw). The index is asked for ``k`` plus the
        number of excluded keyframes, so exactly ``k`` results come back whenever at
        least ``k`` keyframes are old enough (exact for the flat index).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        with self._lock:
            stamps = self.stamps_ns
            n_excluded = 0
            if exclude_newer_than_ns is not None:
                n_excluded = int(np.count_nonzero(stamps > int(exclude_newer_than_ns)))
            fetch = min(len(stamps), k + n_excluded)
            if fetch - n_excluded <= 0:
                return []
            scores, ids = self.index.search(np.asarray(descriptor, np.float32).reshape(1, -1), fetch)
        results = []
        for i, s in zip(ids[0], scores[0]):
            if i < 0:
                break
            if exclude_newer_than_ns is not None and stamps[i] > exclude_newer_than_ns:
                continue
            results.append((int(i), float(s)))
            if len(results) == k:
                break
        return results

    def similarities(self, descriptor: np.ndarray) -> np.ndarray:
        """(N,) cosine similarity of ``descriptor`` to every keyframe, by id (flat index only)."""
        with self._lock:
            # ids are 0..N-1 in storage order (add_batch appends them so; load checks it)
            return similarity_row(descriptor, self.index.flat_vectors())

    # --- persistence ------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Atomically write the map to ``directory`` (replacing a previous map there)."""
        target = Path(directory).absolute()
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() and not (target / "meta.json").is_file() and any(target.iterdir()):
            raise MapError(f"{target} exists and is not a map directory (no meta.json): refusing to replace it")
        tmp = target.parent / f".{target.name}.saving-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            with self._lock:
                self._write_files(tmp)
            _fsync_path(tmp)
            _swap_in(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        remove_save_leftovers(target)
        return target

    def _write_files(self, out: Path) -> None:
        self.index.save(out / "index.faiss")
        n = len(self)
        np.savez(out / "keyframes.npz", ids=np.arange(n, dtype=np.int64), stamps_ns=self.stamps_ns,
                 poses=self.poses, frame_ids=np.array(self._frame_ids, dtype=np.str_).reshape(n),
                 sources=np.array(self._sources, dtype=np.str_).reshape(n))
        has = np.array([f is not None for f in self._features], bool).reshape(n)
        counts = np.array([0 if f is None else len(f.keypoints) for f in self._features], np.int64)
        present = [f for f in self._features if f is not None]
        sizes = np.array([(0, 0) if f is None else f.image_size for f in self._features], np.int64).reshape(n, 2)
        kind = self._feature_kind or "orb"
        dtype, width = DESCRIPTOR_LAYOUTS[kind]
        np.savez(out / "features.npz", has_features=has, image_sizes=sizes, kind=np.array(kind),
                 offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                 keypoints=np.concatenate([f.keypoints for f in present] + [np.empty((0, 2), np.float32)]),
                 descriptors=np.concatenate([f.descriptors for f in present] + [np.empty((0, width), dtype)]))
        for name in FILES:
            _fsync_path(out / name)
        meta = {
            "format": FORMAT,
            "model": self.model.to_json(),
            "index_kind": self.index.kind,
            "counts": {"keyframes": n, "with_pose": int((~np.isnan(self.poses).any(axis=1)).sum()),
                       "with_features": int(has.sum())},
            "features": {"kind": self._feature_kind, "bytes_per_keyframe": round(self.feature_bytes_per_keyframe())},
            "sha256": {name: file_sha256(out / name) for name in FILES},
        }
        (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        _fsync_path(out / "meta.json")

    @classmethod
    def load(cls, directory: str | Path, expect_model: ModelIdentity | None = None) -> "MapDatabase":
        """Read a map saved by ``save``; ``expect_model`` refuses maps made by another model."""
        directory = Path(directory)
        meta = _read_meta(directory)
        try:
            model = ModelIdentity(**_checked_model_json(meta["model"]))
        except (TypeError, ValueError) as e:
            raise MapError(f"{directory}/meta.json: invalid model identity {meta.get('model')!r}: {e}") from None
        if expect_model is not None and not model.compatible_with(expect_model):
            raise MapMismatchError(
                f"map {directory} was built with model {model.describe()}, but the model in use is "
                f"{expect_model.describe()}: rebuild the map with this model (structvpr build-map) "
                f"or run with the model the map was built with")
        for name in FILES:
            path = directory / name
            if not path.is_file():
                raise MapError(f"map {directory} is incomplete: {name} is missing")
            if file_sha256(path) != meta["sha256"].get(name):
                raise MapError(f"map {directory}: {name} is corrupt (content hash differs from meta.json)")
        index = DescriptorIndex.load(directory / "index.faiss")
        keyframes = _load_npz(directory / "keyframes.npz", ("ids", "stamps_ns", "poses", "frame_ids", "sources"))
        feats = _load_npz(directory / "features.npz", ("has_features", "image_sizes", "offsets", "keypoints", "descriptors"),
                          optional=("kind",))
        kind = str(feats.get("kind", "orb"))  # maps saved before kinds existed hold ORB features
        if kind not in DESCRIPTOR_LAYOUTS:
            raise MapError(f"{directory}/features.npz: unknown local-feature kind {kind!r} "
                           f"(this version knows {list(DESCRIPTOR_LAYOUTS)})")
        n = meta["counts"].get("keyframes")
        if not isinstance(n, int) or n < 0:
            raise MapError(f"{directory}/meta.json: invalid keyframe count {n!r}")
        _check_consistent(directory, n, model, index, keyframes, feats, kind)
        _check_values(directory, index, keyframes)

        off = feats["offsets"]
        try:
            features = [
                LocalFeatures(feats["keypoints"][off[i]:off[i + 1]], feats["descriptors"][off[i]:off[i + 1]],
                              tuple(int(v) for v in feats["image_sizes"][i]), kind)
                if feats["has_features"][i] else None
                for i in range(n)
            ]
        except (TypeError, ValueError) as e:
            raise MapError(f"{directory / 'features.npz'}: invalid {kind} features ({e})") from None
        db = cls(model, index.config)
        db.index = index
        db._set_records(keyframes["stamps_ns"].astype(np.int64), keyframes["poses"].astype(np.float64),
                        [str(s) for s in keyframes["frame_ids"]], [str(s) for s in keyframes["sources"]], features)
        return db


def open_map(directory: str | Path, model: ModelIdentity, *, create: bool) -> MapDatabase:
    """The map a run starts from: the one at ``directory``, or (``create``) a new empty one.

    ``MapError`` (naming the recovery step) when the directory holds a map of another
    model, a damaged map, something that is not a map, no map where one is required
    (``create`` False), or no map because a save was interrupted between its renames:
    starting empty there would silently drop the previous map at the next save.
    """
    directory = Path(directory).absolute()
    if (directory / "meta.json").is_file():
        db = MapDatabase.load(directory, expect_model=model)
        remove_save_leftovers(directory)
        return db
    if directory.exists() and not directory.is_dir():
        raise MapError(f"{directory} is a file, not a map directory")
    hint = _interrupted_save_hint(directory)
    if hint:
        raise MapError(f"{directory} holds no map{hint}")
    if not create:
        raise MapError(f"{directory} holds no map (build one with a mapping run or structvpr build-map)")
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise MapError(f"{directory} exists and is not a map directory (no meta.json)")
    remove_save_leftovers(directory)
    return MapDatabase(model)


def remove_save_leftovers(directory: str | Path) -> list[Path]:
    """Delete the ``.NAME.saving-*`` / ``.NAME.previous-*`` folders interrupted saves left beside
    ``directory`` (each as big as a map); call only when the map at ``directory`` is the one to
    keep. Returns what was removed."""
    directory = Path(directory).absolute()
    leftovers = sorted(directory.parent.glob(f".{directory.name}.saving-*")) + _previous_maps(directory)
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
    return leftovers


# --- helpers ------------------------------------------------------------------------------


def _previous_maps(directory: Path) -> list[Path]:
    return sorted(directory.parent.glob(f".{directory.name}.previous-*")) if directory.parent.is_dir() else []


def _interrupted_save_hint(directory: Path) -> str:
    previous = _previous_maps(directory)
    return f" (an interrupted save left the previous map at {previous[0]}: rename it to {directory})" if previous else ""


def _pose_row(pose) -> np.ndarray:
    if pose is None:
        return np.full(7, np.nan)
    row = np.asarray(pose, np.float64).reshape(-1)
    if row.shape != (7,):
        raise ValueError(f"pose must be 7 numbers {POSE_FIELDS}, got shape {np.shape(pose)}")
    if not np.isfinite(row).all():
        raise ValueError(f"pose contains NaN/inf: {row.tolist()} (pass None for an unknown pose)")
    return row


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # directories cannot be fsynced on every OS/filesystem
    finally:
        os.close(fd)


def _swap_in(tmp: Path, target: Path) -> None:
    """Make the complete map in ``tmp`` appear at ``target``, keeping any old map until then.

    A directory cannot be renamed over a non-empty one, so the old map is first renamed
    to a sibling; a crash between the two renames leaves both complete maps on disk and
    ``load`` names the sibling to recover from.
    """
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.previous-{uuid.uuid4().hex[:8]}"
        os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)
        raise
    _fsync_path(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _read_meta(directory: Path) -> dict:
    if directory.exists() and not directory.is_dir():
        raise MapError(f"{directory} is a file, not a map directory")
    if not directory.is_dir():
        raise FileNotFoundError(f"map directory not found: {directory}{_interrupted_save_hint(directory)}")
    path = directory / "meta.json"
    if not path.is_file():
        raise MapError(f"{directory} is not a map: meta.json is missing")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MapError(f"{path}: corrupt ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise MapError(f"{path}: unsupported map format {found!r} (this version reads '{FORMAT}')")
    for key in ("model", "counts", "sha256"):
        if not isinstance(meta.get(key), dict):
            raise MapError(f"{path}: missing or invalid '{key}'")
    return meta


def _load_npz(path: Path, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in keys if k not in data.files]
            if missing:
                raise MapError(f"{path}: missing arrays {missing}")
            return {k: data[k] for k in keys + optional if k in data.files}
    except MapError:
        raise
    except Exception as e:  # zipfile/npy errors on a damaged file
        raise MapError(f"{path}: unreadable ({type(e).__name__}: {e})") from None


def _check_consistent(directory: Path, n: int, model: ModelIdentity, index: DescriptorIndex,
                      kf: dict[str, np.ndarray], feats: dict[str, np.ndarray], kind: str) -> None:
    def fail(what: str):
        raise MapError(f"map {directory} is inconsistent: {what}")

    if index.dim != model.dim:
        fail(f"index holds {index.dim}-d descriptors but meta.json says the model is {model.dim}-d")
    if len(index) != n:
        fail(f"index holds {len(index)} descriptors, meta.json counts {n} keyframes")
    if not np.array_equal(index.ids(), np.arange(n)) or not np.array_equal(kf["ids"], np.arange(n)):
        fail("keyframe ids are not 0..N-1 in order in both the index and keyframes.npz")
    shapes = {"stamps_ns": (n,), "poses": (n, 7), "frame_ids": (n,), "sources": (n,), "has_features": (n,),
              "image_sizes": (n, 2), "offsets": (n + 1,)}
    for key, shape in shapes.items():
        arr = kf.get(key, feats.get(key))
        if arr.shape != shape:
            fail(f"'{key}' has shape {arr.shape}, expected {shape}")
    off = feats["offsets"]
    if off[0] != 0 or (np.diff(off) < 0).any() or off[-1] != len(feats["keypoints"]) or off[-1] != len(feats["descriptors"]):
        fail("features.npz offsets do not match its keypoint/descriptor arrays")
    dtype, width = DESCRIPTOR_LAYOUTS[kind]
    desc = feats["descriptors"]
    kp = feats["keypoints"]
    if kp.dtype != np.float32 or kp.ndim != 2 or kp.shape[1] != 2 or desc.dtype != dtype or desc.ndim != 2 \
            or desc.shape[1] != width:
        fail(f"features.npz keypoints must be float32 (K, 2) and {kind} descriptors {dtype} (K, {width}), "
             f"got {kp.dtype} {kp.shape} and {desc.dtype} {desc.shape}")
    for key, dtype_kind, what in (("stamps_ns", "i", "integer nanoseconds"), ("poses", "f", "floats"),
                            ("frame_ids", "U", "strings"), ("sources", "U", "strings"),
                            ("has_features", "b", "booleans"), ("image_sizes", "i", "integers"),
                            ("offsets", "i", "integers")):
        arr = kf[key] if key in kf else feats[key]
        if arr.dtype.kind != dtype_kind:
            fail(f"{'keyframes.npz' if key in kf else 'features.npz'} '{key}' holds {arr.dtype}, expected {what}")


def _check_values(directory: Path, index: DescriptorIndex, kf: dict[str, np.ndarray]) -> None:
    """Refuse values no save writes: they would load and then publish nonsense (issue 20, S6).

    Descriptors: finite and L2-normalised (a x100 descriptor scores "cosine" 100, a zero one
    matches nothing), checked for the flat index (ivfpq keeps only codes). Stamps: >= 0 (a NaN
    stamp cast to int64 is INT64_MIN). Poses: unknown (all NaN) or 7 finite numbers with a unit
    quaternion, as the odometry input requires.
    """
    if index.kind == "flat" and len(index):
        try:
            index._check_vectors(index.flat_vectors(), f"{directory / 'index.faiss'}: descriptors")
        except ValueError as e:
            raise MapError(f"{e} (a map save writes unit vectors: the file was altered or written by another tool)") from None
    stamps = kf["stamps_ns"]
    bad = np.flatnonzero(stamps < 0)
    if bad.size:
        raise MapError(f"{directory / 'keyframes.npz'}: {bad.size} negative stamps (e.g. keyframe {bad[0]}: "
                       f"{stamps[bad[0]]} ns; a NaN stamp reads as -2^63)")
    poses = kf["poses"]
    unknown = np.isnan(poses).all(axis=1)
    known = poses[~unknown]
    norms = np.einsum("ij,ij->i", known[:, 3:], known[:, 3:]) if len(known) else np.empty(0)
    broken = ~np.isfinite(known).all(axis=1) | ~(np.abs(norms - 1) <= QUATERNION_NORM_TOLERANCE)
    if broken.any():
        i = int(np.flatnonzero(~unknown)[np.flatnonzero(broken)[0]])
        raise MapError(f"{directory / 'keyframes.npz'}: {int(broken.sum())} poses are neither unknown (all NaN) nor "
                       f"7 finite numbers with a unit quaternion (e.g. keyframe {i}: {poses[i].tolist()})")


def _checked_model_json(model: dict) -> dict:
    """meta.json's model entry with its types checked: ``dim: "472"`` would compare unequal to 472
    and be refused as another model with two identical descriptions."""
    where = "model"
    types = {"name": (str,), "dim": (int,), "checkpoint_sha256": (str, type(None)), "input_size": (list, type(None))}
    for key, allowed in types.items():
        value = model.get(key)
        if isinstance(value, bool) or not isinstance(value, allowed):
            raise ValueError(f"'{where}.{key}' is {value!r} ({type(value).__name__}), expected "
                             f"{' or '.join('null' if t is type(None) else t.__name__ for t in allowed)}")
    size = model.get("input_size")
    if size is not None and (len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                       for v in size)):
        raise ValueError(f"'{where}.input_size' is {size!r}, expected [width, height] in pixels or null")
    return model
