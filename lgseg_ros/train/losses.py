"""Segmentation loss: cross-entropy over the batch's K labels + "none", ignore honoured.

Class weights (SegNet's median-frequency balancing) are applied per pixel by the pixel's
*dataset* class, not by output channel: with random label subsets a channel means a
different class every batch, and "none" pixels keep the weight of the class they are.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .datasets import IGNORE


def seg_loss(logits: torch.Tensor, target: torch.Tensor, classes_map: torch.Tensor | None = None,
             class_weights: torch.Tensor | None = None, ignore_index: int = IGNORE) -> torch.Tensor:
    """``logits`` [B, K+1, h, w] (any stride; upsampled bilinearly to the target size),
    ``target`` [B, H, W] int64 training targets (0..K, or ignore), ``classes_map`` [B, H, W]
    int64 dataset class ids (only needed with ``class_weights``)."""
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear",
                               align_corners=False)
    logits = logits.float()  # CE in fp32 under AMP
    if class_weights is None:
        return F.cross_entropy(logits, target, ignore_index=ignore_index)
    per_pixel = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")
    valid = target != ignore_index
    idx = classes_map.clamp(0, class_weights.numel() - 1)
    w = class_weights.to(per_pixel.device)[idx] * valid
    return (per_pixel * w).sum() / w.sum().clamp(min=1e-6)
