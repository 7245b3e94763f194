"""ADE20K teacher: DeepLabV3 + MobileNetV2 (TF-Hub lite-model, float TFLite) run with ai-edge-litert.

The paper's label space (150 ADE20K classes). Model facts (checked in docs/segmentation.md):

- input 1x513x513x3 RGB, x / 127.5 - 1; output 1x513x513x151 logits;
- output channel 0 = "other/unlabelled", channel k = ``labels.txt`` line k = SLME table id k - 1
  (with offset 0 the 6-cluster mIoU on CamVid is 0.9 %, with offset 1 it is 67 %);
- fixed input size: the image is scaled so its long side is 513 and padded at the bottom/right
  with 0 (mid-grey after normalising), DeepLab's own evaluation preprocessing. Stretching to
  513x513 instead scores 62.0 vs 67.2 % on CamVid (6 clusters).

Label maps use the project's convention (``segment.LABEL_SETS["ade20k"]``): ids 0..149 are the
ADE20K classes in table order and the last id, 150, is "other/unlabelled" (SLME: void).
Run directly rather than converted to torch: the graph is dynamic-range quantised (int8 weights)
with atrous convs and an ASPP decoder, and XNNPACK runs it in ~0.7 s per image on one thread.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from structvpr_core.paths import shared_dir
from structvpr_core.runtime.tflite import load_tflite

DEEPLAB_ADE20K = Path("models") / "deeplab_ade20k" / "lite-model_deeplabv3-mobilenetv2-ade20k_1_default_1.tflite"
INPUT_SIZE = 513
NUM_OUTPUTS = 151  # "other" + 150 classes


def default_weights() -> Path:
    return shared_dir() / DEEPLAB_ADE20K


class DeepLabADE20K:
    """RGB uint8 HxWx3 -> uint8 HxW ADE20K ids (0..149 classes, 150 = other)."""

    def __init__(self, path: Path, threads: int | None = None):
        if not Path(path).is_file():
            raise FileNotFoundError(f"DeepLab ADE20K TFLite file not found: {path}")
        self.interpreter = load_tflite(path, threads)
        (inp,), (out,) = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        expected_in, expected_out = [1, INPUT_SIZE, INPUT_SIZE, 3], [1, INPUT_SIZE, INPUT_SIZE, NUM_OUTPUTS]
        if list(inp["shape"]) != expected_in or list(out["shape"]) != expected_out:
            raise ValueError(
                f"{path}: input {list(inp['shape'])} / output {list(out['shape'])}, expected "
                f"{expected_in} / {expected_out}: not the DeepLabV3 ADE20K model"
            )
        self._input, self._output = inp["index"], out["index"]
        # output channel k -> project id: k - 1 for the classes, channel 0 ("other") -> 150
        self._relabel = ((np.arange(NUM_OUTPUTS) - 1) % NUM_OUTPUTS).astype(np.uint8)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        scale = INPUT_SIZE / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        small = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        canvas = np.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), np.float32)
        canvas[0, :nh, :nw] = small.astype(np.float32) / 127.5 - 1.0
        self.interpreter.set_tensor(self._input, canvas)
        self.interpreter.invoke()
        # A view of the output buffer, not get_tensor's copy (160 MB: measured 0.94 s vs 0.06 s
        # for the argmax on a loaded machine); argmax makes a new array, so no view outlives this call.
        channel = self.interpreter.tensor(self._output)()[0, :nh, :nw].argmax(-1)
        labels = self._relabel[channel]
        return cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST) if (nw, nh) != (w, h) else labels
