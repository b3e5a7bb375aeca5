"""The ONNX Runtime frame path (fp32 or int8) in the place of the eager network in
`lgseg eval`, so that evaluation scores exactly the graph the node runs.

The exported frame path ends in ids (argmax after the bilinear upsample), not logits;
evaluation's ``predict`` upsamples logits to the label size and takes the argmax. Exported
at the label size, the graph's ids are that same computation, and a one-hot of them is a
"logit" map whose argmax gives them back unchanged.
"""
from __future__ import annotations

import numpy as np


class OnnxFramePathNet:
    """``net(images [B,3,H,W] in [0,1], text [K,D]) -> one-hot [B,K+1,H,W]`` via ONNX Runtime."""

    def __init__(self, checkpoint: str, precision: str = "fp32", calibration: str | None = None):
        from .artefacts import model_source

        self.source, _ = model_source(checkpoint, calibration=calibration)
        self.precision = precision
        self._backends: dict[tuple[int, int], object] = {}

    def _backend(self, hw: tuple[int, int]):
        if hw not in self._backends:
            from .backends.onnxruntime_backend import OnnxRuntimeBackend

            self._backends[hw] = OnnxRuntimeBackend(
                None, self.source.cfg, device="cpu", precision=self.precision,
                onnx_path=self.source.onnx(hw, self.precision))
        return self._backends[hw]

    def to(self, *_args, **_kw):   # evaluation moves the net to its device; this one is CPU
        return self

    def eval(self):
        return self

    def __call__(self, images, text):
        import torch

        backend = self._backend((int(images.shape[-2]), int(images.shape[-1])))
        backend.set_labels(np.ascontiguousarray(text.detach().cpu().numpy(), np.float32))
        k1 = int(text.shape[0]) + 1
        out = []
        for image in images.detach().cpu().numpy():
            ids, _ = backend.infer(np.ascontiguousarray(image[None], np.float32))
            out.append(torch.nn.functional.one_hot(torch.from_numpy(ids.astype(np.int64)), k1)
                       .permute(2, 0, 1).float())
        return torch.stack(out)
