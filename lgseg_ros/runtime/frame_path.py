"""The per-frame computation every backend runs: network -> full-resolution ids + confidence.

Upsampling, softmax and argmax live inside the exported graph so that an accelerator does
them instead of the host, and a backend returns two compact planes rather than K+1 float
logit maps to copy back.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FramePath(nn.Module):
    """Wraps an LGSegNet: (image [B,3,H,W] in [0,1], text [K,D]) ->
    (ids [B,H,W] int32 with K = "none of these", confidence [B,H,W] float32 = max softmax).
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(image, text)
        # Upsample and normalise in fp32 even when the net runs in fp16: softmax over many
        # labels and the confidence threshold are sensitive to half-precision rounding.
        logits = logits.float()
        logits = F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
        # max softmax = exp(l_max - l_max) / sum_c exp(l_c - l_max) = 1 / sum_c exp(l_c - l_max).
        # Computed this way because a Softmax over the channel axis of an NCHW map is slow in
        # ONNX Runtime (it transposes to the last axis: 39 ms of a 100 ms frame at 360x480 on
        # CPU); max/argmax/exp/sum along channels stay in layout.
        top, ids = torch.max(logits, dim=1, keepdim=True)
        confidence = torch.reciprocal(torch.exp(logits - top).sum(dim=1))
        return ids.squeeze(1).to(torch.int32), confidence


def reference_outputs(net: nn.Module, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager fp32 frame path, the ground truth that parity tests compare backends with."""
    with torch.inference_mode():
        return FramePath(net).eval()(image, text)
