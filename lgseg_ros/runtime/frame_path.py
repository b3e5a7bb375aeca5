"""The per-frame computation every backend runs: network -> full-resolution ids + confidence.

Upsampling, softmax and argmax live inside the exported graph so that an accelerator does
them instead of the host, and a backend returns two compact planes rather than K+1 float
logit maps to copy back.

The tail (upsample K+1 logit maps to full size, max, argmax, exp-sum) reads and writes
maps of K+1 x H x W floats (8 MB at 360x480, K = 11) that do not fit in a core's cache, so
it is bound by memory traffic: 35% of the int8 graph's time on the CPU. Two things make
it cheaper in ONNX Runtime while computing the same values:

* The upsample runs channels-last (``Resize`` with scales [1, s, s, 1]): ONNX Runtime's
  channels-last bilinear kernel takes about half the time of the NCHW one, and the
  channel reductions become reductions over the innermost axis.
* The confidence skips the "subtract the max" pass when the logits are bounded well within
  float32's exp range: a text head's logits are cosines times its logit scale (36 for the
  shipped models), so exp() of them can neither overflow nor underflow, and
  max softmax = exp(l_max) / sum_c exp(l_c) exactly as 1 / sum_c exp(l_c - l_max) does.
  Nets without a known bound (closed-set head, reference models) keep the subtraction.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# exp(x) for |x| <= 75 stays a normal float32 (exp(-87) is the smallest), and the sum of up
# to 65535 labels' exp(75) stays below float32's maximum (exp(88.7)).
SAFE_EXP_BOUND = 75.0


def logit_bound(net: nn.Module) -> float | None:
    """An upper bound of |logit| for a text head (cosine x clamped logit scale), else None."""
    head = getattr(net, "head", None)
    scale = getattr(head, "logit_scale", None)
    if not isinstance(scale, torch.Tensor) or not hasattr(head, "logit_scale_max"):
        return None
    return min(math.exp(float(scale.detach().float().cpu())), float(head.logit_scale_max))


class _UpsampleChannelsLast(torch.autograd.Function):
    """[B, C, h, w] -> bilinear (align_corners=False) -> [B, H, W, C].

    Exported as Transpose + a channels-last ``Resize`` (sizes [B, H, W, C], C dynamic),
    which torch's own interpolate export cannot express."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, height: int, width: int) -> torch.Tensor:
        up = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        return up.permute(0, 2, 3, 1)

    @staticmethod
    def symbolic(g, logits, height: int, width: int):
        nhwc = g.op("Transpose", logits, perm_i=[0, 2, 3, 1])
        shape = g.op("Shape", nhwc)

        def const(values):
            return g.op("Constant", value_t=torch.tensor(values, dtype=torch.int64))

        batch = g.op("Slice", shape, const([0]), const([1]), const([0]))
        channels = g.op("Slice", shape, const([3]), const([4]), const([0]))
        sizes = g.op("Concat", batch, const([int(height), int(width)]), channels, axis_i=0)
        empty = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
        return g.op("Resize", nhwc, empty, empty, sizes, mode_s="linear",
                    coordinate_transformation_mode_s="half_pixel", nearest_mode_s="floor")


class FramePath(nn.Module):
    """Wraps an LGSegNet: (image [B,3,H,W] in [0,1], text [K,D]) ->
    (ids [B,H,W] int32 with K = "none of these", confidence [B,H,W] float32 = max softmax).
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        # Read once here, not per frame: a .item() in forward would stall CUDA graphs.
        bound = logit_bound(net)
        self.skip_max_subtraction = bound is not None and bound <= SAFE_EXP_BOUND

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(image, text)
        # Upsample and normalise in fp32 even when the net runs in fp16: softmax over many
        # labels and the confidence threshold are sensitive to half-precision rounding.
        logits = logits.float()
        height, width = int(image.shape[-2]), int(image.shape[-1])
        up = _UpsampleChannelsLast.apply(logits, height, width)            # [B, H, W, K+1]
        # max softmax = 1 / sum_c exp(l_c - l_max). A Softmax node is slow here in ONNX
        # Runtime (39 ms of a 100 ms frame at 360x480 over NCHW channels; short rows
        # channels-last): max / argmax / exp / sum are cheaper.
        top, ids = torch.max(up, dim=-1)
        if self.skip_max_subtraction:
            confidence = torch.exp(top) / torch.exp(up).sum(dim=-1)
        else:
            confidence = torch.reciprocal(torch.exp(up - top.unsqueeze(-1)).sum(dim=-1))
        return ids.to(torch.int32), confidence


def reference_outputs(net: nn.Module, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager fp32 frame path, the ground truth that parity tests compare backends with."""
    with torch.inference_mode():
        return FramePath(net).eval()(image, text)
