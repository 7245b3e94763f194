"""Featureless-frame check (issue 20, S1) on real frames of ../shared/data and on real failure modes."""

import numpy as np
import pytest

from structvpr_core.data.images import read_rgb
from structvpr_core.runtime.featureless import MIN_STRUCTURE, featureless_reason, image_structure

# the lowest-scoring real frames of the 7594 measured (benchmarks/fault_injection.py): Nordland
# tunnels (black but for the broadcaster's logo), then the dimmest CamVid / Gardens Point frames
DARKEST_REAL = ["nordland64/winter/images-11950.png", "nordland64/summer/images-33480.png",
                "nordland64/summer/images-31690.png", "nordland64/winter/images-17870.png"]


def test_the_darkest_real_frames_and_every_gardens_point_night_frame_pass(shared):
    for name in DARKEST_REAL:
        rgb = read_rgb(shared / "data" / name)
        assert featureless_reason(rgb) is None, name
        assert image_structure(rgb) > 1.6 * MIN_STRUCTURE, name  # the margin the threshold was chosen with
    night = [image_structure(read_rgb(p)) for p in sorted((shared / "data/gardenspoint/night_right").glob("*.jpg"))]
    assert len(night) == 200 and min(night) > 40 * MIN_STRUCTURE


@pytest.mark.parametrize("size", [(480, 640), (32, 64), (160, 320)])
def test_black_uniform_noise_and_lens_cap_frames_are_featureless_at_any_size(size):
    rng = np.random.default_rng(0)
    h, w = size
    frames = {
        "black": np.zeros((h, w, 3), np.uint8),
        "grey": np.full((h, w, 3), 128, np.uint8),
        "white": np.full((h, w, 3), 255, np.uint8),
        "dark noise": rng.integers(0, 16, (h, w, 3), dtype=np.uint8),
        "dark grey noise": np.repeat(rng.integers(0, 16, (h, w, 1), dtype=np.uint8), 3, axis=2),
        "full noise": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "lens cap": np.clip(rng.normal(4, 2, (h, w, 3)), 0, 255).astype(np.uint8),
    }
    for name, rgb in frames.items():
        reason = featureless_reason(rgb)
        assert reason is not None and f"the {w}x{h} image is featureless" in reason, name


def test_a_real_frame_darkened_to_a_few_grey_levels_still_passes(shared):
    # the layout survives darkening: night driving is not a lens cap
    rgb = read_rgb(shared / "data/gardenspoint/day_left/Image100.jpg")
    dark = (rgb.astype(np.float32) * 0.1).astype(np.uint8)  # ~0..25 grey levels
    assert featureless_reason(dark) is None
