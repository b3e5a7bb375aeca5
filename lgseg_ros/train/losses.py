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


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor,
                 temperature: float = 2.0, ignore_index: int = IGNORE) -> torch.Tensor:
    """Learning without forgetting: KL(teacher || student) of the softened label
    distributions, on the pixels where the teacher's answer is the training target.

    ``student``, ``teacher`` [B, K+1, h, w] logits for the same label set (the teacher's are
    resized to the student's grid), ``target`` [B, H, W] training targets. Where the teacher
    disagrees with the labels (a "window" it does not know, an indoor scene it never saw)
    it has nothing to keep, so those pixels get no distillation; where it agrees, its whole
    distribution (the margins, the runner-up labels) is what fine-tuning on new data tends
    to forget. Scaled by T^2 so its gradient does not shrink with the temperature."""
    if teacher.shape[-2:] != student.shape[-2:]:
        teacher = F.interpolate(teacher, size=student.shape[-2:], mode="bilinear",
                                align_corners=False)
    small = F.interpolate(target[:, None].float(), size=student.shape[-2:], mode="nearest")[:, 0].long()
    teacher = teacher.float().detach()
    keep = (teacher.argmax(1) == small) & (small != ignore_index)
    if not keep.any():
        return student.sum() * 0.0
    log_p_s = F.log_softmax(student.float() / temperature, dim=1)
    log_p_t = F.log_softmax(teacher / temperature, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(1)
    return (kl * keep).sum() / keep.sum() * temperature ** 2
