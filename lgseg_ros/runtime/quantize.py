"""Static int8 quantisation of the frame-path ONNX file for ONNX Runtime on the CPU.

onnxruntime.quantization does the work (QDQ format, per-channel int8 weights, uint8
activations, which ONNX Runtime fuses into int8 convolutions that use VNNI where the CPU
has it). Activation ranges are calibrated on CamVid *train* frames, never val: val is
where `lgseg eval` measures what int8 costs, and frames it was calibrated on would flatter
it. The text input during calibration is the checkpoint's trained class names, encoded as
the run time encodes them.

Quantised: every convolution (backbone, decoder, embedding) and the ReLU6 / ReLU after
it (QUANTISED_OPS); the attention of the fusion blocks, the label scoring and the tail
(upsample, argmax, confidence) stay fp32: they are a small share of the time and decide
the argmax directly.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# Calibration frames: spread over the train split (its sequences are in file order).
DEFAULT_CALIBRATION_FRAMES = 32
# Clip (ReLU6) and Relu must be listed with Conv: the quantiser then folds each into the
# convolution before it and calibrates the activation after it. With Conv alone the range
# is taken before the clip, where batch-norm folding leaves channels reaching +-260 that
# the clip throws away: the stem's output step was 2.1 against a useful range of 0..6,
# and the argmax agreed with fp32 on 80% of CamVid val pixels instead of 99%.
QUANTISED_OPS = ("Conv", "Clip", "Relu")
# Recorded in each int8 file's manifest; a file made by another recipe is rebuilt.
RECIPE = 2


def default_calibration_dir() -> Path:
    """CamVid's train split: $LGSEG_CAMVID/train, else ../shared/datasets/camvid/train beside
    the checkout (train/datasets.py's rule, repeated here because that module imports torch)."""
    root = os.environ.get("LGSEG_CAMVID")
    base = Path(root) if root else Path(__file__).resolve().parents[3] / "shared" / "datasets" / "camvid"
    return base / "train"


def calibration_files(folder: str | os.PathLike | None = None,
                      count: int = DEFAULT_CALIBRATION_FRAMES) -> list[Path]:
    folder = Path(folder) if folder else default_calibration_dir()
    files = sorted(p for p in folder.glob("*.png")) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(
            f"no calibration frames in {folder}: int8 calibration needs CamVid train images "
            "(set LGSEG_CAMVID, or pass --calibration DIR)")
    if "val" in folder.name.lower() or "test" in folder.name.lower():
        raise ValueError(f"{folder}: calibrate on training frames, not {folder.name} "
                         "(that is where the accuracy cost is measured)")
    step = max(1, len(files) // count)
    return files[::step][:count]


def calibration_text(source) -> tuple[list[str], np.ndarray]:
    """The trained class names (checkpoint metadata, else CamVid's) and their embeddings."""
    from lgseg_ros.labels import CAMVID_CLASSES
    from lgseg_ros.runtime.grounding import vocabulary_from_metadata
    from lgseg_ros.text import build_text_encoder

    vocab, _ = vocabulary_from_metadata(source.meta)
    names = list(vocab) or list(CAMVID_CLASSES)
    encoder = build_text_encoder(source.cfg.text_encoder, runtime="onnxruntime",
                                 template=source.cfg.prompt_template)
    emb = np.asarray(encoder.encode(names), np.float32)
    return names, emb


class _Frames:
    """onnxruntime.quantization.CalibrationDataReader over calibration frames."""

    def __init__(self, files, size, text):
        import cv2

        from . import preprocess as pp

        self._feeds = []
        for f in files:
            try:
                bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
            except cv2.error:   # over OpenCV's decoder cap (OpenCV 5 raises)
                bgr = None
            if bgr is None:
                raise FileNotFoundError(f"cannot read calibration frame {f}")
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            image = pp.preprocess(rgb, pp.plan(rgb.shape[:2], size, True))
            self._feeds.append({"image": image.copy(), "text": text})
        self._it = iter(self._feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):
        self._it = iter(self._feeds)


def quantize_frame_path(fp32_path: str | os.PathLike, out: str | os.PathLike, source,
                        calibration: str | None = None,
                        frames: int = DEFAULT_CALIBRATION_FRAMES) -> dict:
    """Write the int8 graph of ``fp32_path`` to ``out``; returns what the manifest records."""
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .onnx_info import onnx_io_shapes

    shapes = onnx_io_shapes(fp32_path)
    size = (int(shapes["image"][2]), int(shapes["image"][3]))
    files = calibration_files(calibration, frames)
    names, text = calibration_text(source)
    start = time.perf_counter()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lgseg_quant_") as tmp:
        pre = Path(tmp) / "pre.onnx"
        # Shape inference + graph clean-up that the quantiser's pattern matching needs.
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        partial = out.with_name(out.name + ".tmp")
        try:   # a failure (a full disk, a stop) must not leave the half-written file behind
            quantize_static(str(pre), str(partial), _Frames(files, size, text),
                            quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTISED_OPS),
                            per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
            onnx.checker.check_model(str(partial))
            os.replace(partial, out)
        finally:
            partial.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    log.info("quantised %s -> %s in %.1f s on %d CamVid train frames", fp32_path, out, seconds, len(files))
    return {"recipe": RECIPE, "method": "onnxruntime.quantization static QDQ, MinMax, per-channel s8 weights, u8 activations",
            "ops": list(QUANTISED_OPS), "frames": [f.name for f in files],
            "frames_dir": str(Path(files[0]).parent), "text": names, "seconds": round(seconds, 1)}
