"""Closed-set segmentation teachers: pretrained networks with a fixed class list, run over
images to make pseudo-labels (``lgseg pseudo-label``). Training-time only; the node never
imports this module.

A teacher is a TFLite file (run with ``ai-edge-litert``'s interpreter, which works with
numpy 2) or an ONNX file (ONNX Runtime), plus its class names. The three shipped with the
project's data (``shared/teachers``) are known by file name, with their input scaling and
output layout; any other file needs ``TeacherSpec`` fields given by hand.

Images are letterboxed into the teacher's square input (aspect kept, the rest padded), so
a 360x480 street frame is not squashed, and the prediction is cropped back and resized to
the image's own size: labels by nearest neighbour, confidence bilinearly.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from lgseg_ros.runtime.engine_cache import sha256_file


@dataclasses.dataclass(frozen=True)
class TeacherSpec:
    input_scaling: str          # "minus1_1" (x / 127.5 - 1, float) or "uint8"
    output: str                 # "logits" ([1,H,W,C]) or "ids" ([1,H,W])
    labels_file: str            # beside the model file
    id_offset: int = 0          # output id i is labels[i + id_offset] (line order)
    ignore_ids: tuple[int, ...] = ()   # output ids that mean "not one of the classes"


# By file name: what was verified about each on real frames (test/test_teachers.py).
KNOWN_TEACHERS: dict[str, TeacherSpec] = {
    # 151 logits; channel 0 is ADE's "other" (unlabelled in ADE20K), 1..150 the file's lines
    "ade20k_deeplabv3_mnv2.tflite": TeacherSpec("minus1_1", "logits", "ade20k_labels.txt",
                                                id_offset=-1, ignore_ids=(0,)),
    # Cityscapes *train ids* 0..18 (0 = road); its labels file starts with "background",
    # so output id i names line i + 1
    "cityscapes_deeplab_mnv2_edgetpu_slim_quant.tflite": TeacherSpec(
        "uint8", "ids", "cityscapes_labels.txt", id_offset=1),
    # VOC ids 0..20 with 0 = background (not a class a user would ask for)
    "pascal_voc_deeplabv3_mnv2_quant.tflite": TeacherSpec(
        "uint8", "ids", "pascal_voc_labels.txt", ignore_ids=(0,)),
}


def read_teacher_labels(path: str | Path) -> list[str]:
    """One class per line, ``id<TAB>name`` or a bare name; stops at the first blank line
    (the VOC file carries prose after its names)."""
    names = []
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line:
            break
        names.append(line.split("\t", 1)[1].strip() if "\t" in line else line)
    return names


class Teacher:
    """``predict(rgb) -> (ids int32 HxW, confidence float32 HxW)``; ids index
    ``class_names`` and are -1 where the teacher names no class (its "other"/background)."""

    def __init__(self, path: str | Path, spec: TeacherSpec | None = None, threads: int = 1):
        self.path = Path(path)
        if spec is None:
            spec = KNOWN_TEACHERS.get(self.path.name)
            if spec is None:
                raise ValueError(f"teacher {self.path.name!r} is not a known file "
                                 f"({', '.join(KNOWN_TEACHERS)}); give its TeacherSpec")
        self.spec = spec
        self.class_names = read_teacher_labels(self.path.parent / spec.labels_file)
        self.sha256 = sha256_file(self.path)
        if self.path.suffix == ".onnx":
            import onnxruntime as ort
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            self._sess = ort.InferenceSession(str(self.path), so,
                                              providers=["CPUExecutionProvider"])
            inp = self._sess.get_inputs()[0]
            self.size = int(inp.shape[1])
            self._run = lambda x: self._sess.run(None, {inp.name: x})[0]
        else:
            from ai_edge_litert.interpreter import Interpreter
            it = Interpreter(model_path=str(self.path), num_threads=threads)
            it.allocate_tensors()
            i, o = it.get_input_details()[0], it.get_output_details()[0]
            self.size = int(i["shape"][1])

            def run(x, it=it, i=i, o=o):
                it.set_tensor(i["index"], x)
                it.invoke()
                return it.get_tensor(o["index"])
            self._run = run

    def _letterbox(self, rgb: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        h, w = rgb.shape[:2]
        s = self.size / max(h, w)
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        canvas = np.full((self.size, self.size, 3), 128, np.uint8)  # 0 after x/127.5-1
        canvas[:nh, :nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA
                                      if s < 1 else cv2.INTER_LINEAR)
        return canvas, (nh, nw)

    def predict(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = rgb.shape[:2]
        x, (nh, nw) = self._letterbox(rgb)
        if self.spec.input_scaling == "minus1_1":
            x = x.astype(np.float32) / 127.5 - 1.0
        y = self._run(np.ascontiguousarray(x[None]))
        if self.spec.output == "logits":
            logits = y[0, :nh, :nw].astype(np.float32)
            logits -= logits.max(-1, keepdims=True)
            prob = np.exp(logits)
            prob /= prob.sum(-1, keepdims=True)
            ids, conf = prob.argmax(-1).astype(np.int32), prob.max(-1)
        else:
            ids = y[0, :nh, :nw].astype(np.int32)
            conf = np.ones(ids.shape, np.float32)  # arg-max only: no score to threshold
        ids = cv2.resize(ids, (w, h), interpolation=cv2.INTER_NEAREST)
        conf = cv2.resize(conf, (w, h), interpolation=cv2.INTER_LINEAR)
        bad = np.isin(ids, self.spec.ignore_ids)
        ids = ids + self.spec.id_offset
        ids[bad | (ids < 0) | (ids >= len(self.class_names))] = -1
        return ids, conf


def majority(ids: np.ndarray, names: Sequence[str]) -> list[tuple[str, float]]:
    """Classes by share of the labelled pixels, largest first (for checks and logs)."""
    valid = ids[ids >= 0]
    counts = np.bincount(valid.ravel(), minlength=len(names))
    order = np.argsort(-counts)
    return [(names[i], counts[i] / max(valid.size, 1)) for i in order if counts[i] > 0]
