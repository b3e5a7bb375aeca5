"""Confusion-matrix segmentation metrics (the usual definitions, as mmseg / torchmetrics).

``IoU_c = TP_c / (TP_c + FP_c + FN_c)`` summed over the whole split (not averaged per
image); pixels whose target is the ignore value are dropped before counting. A class
with no ground-truth and no predicted pixel has an undefined IoU (NaN) and is left out
of the mean.
"""
from __future__ import annotations

import numpy as np
import torch

from .datasets import IGNORE


class ConfusionMatrix:
    """``mat[t, p]`` = number of pixels with target ``t`` predicted as ``p``.

    Predictions may use one extra id (``num_classes``, "none of these"): those pixels are
    counted as a miss for their target class but belong to no class's false positives.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE):
        self.n = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes + 1, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred, target = pred.reshape(-1).long().cpu(), target.reshape(-1).long().cpu()
        if pred.shape != target.shape:
            raise ValueError(f"pred has {pred.numel()} pixels, target {target.numel()}")
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        if target.numel() and (target.min() < 0 or target.max() >= self.n):
            raise ValueError(f"target ids outside 0..{self.n - 1} (and not ignore)")
        if pred.numel() and (pred.min() < 0 or pred.max() > self.n):
            raise ValueError(f"prediction ids outside 0..{self.n}")
        self.mat += torch.bincount(target * (self.n + 1) + pred,
                                   minlength=self.n * (self.n + 1)).view(self.n, self.n + 1)

    def merge(self, other: "ConfusionMatrix") -> None:
        self.mat += other.mat

    @property
    def square(self) -> np.ndarray:
        """The [n, n] class-vs-class matrix (the "none" column dropped)."""
        return self.mat[:, : self.n].numpy()

    def iou(self) -> np.ndarray:
        mat = self.mat.double()
        tp = mat.diagonal()
        fn = mat.sum(1) - tp  # includes pixels predicted "none"
        fp = mat[:, : self.n].sum(0) - tp
        denom = tp + fp + fn
        return torch.where(denom > 0, tp / denom.clamp(min=1), torch.nan).numpy()

    def summary(self, class_names=None) -> dict:
        mat = self.mat.double()
        iou = self.iou()
        total = mat.sum().item()
        gt = mat.sum(1)
        acc = torch.where(gt > 0, mat.diagonal() / gt.clamp(min=1), torch.nan).numpy()
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.n)]
        return {
            "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            "pixel_acc": mat.diagonal().sum().item() / total if total else float("nan"),
            "mean_acc": float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan"),
            "none_rate": mat[:, self.n].sum().item() / total if total else float("nan"),
            "per_class_iou": {n: _f(v) for n, v in zip(names, iou)},
            "per_class_acc": {n: _f(v) for n, v in zip(names, acc)},
            "pixels": int(total),
        }


def _f(v: float) -> float | None:
    return None if not np.isfinite(v) else float(v)


class BinaryIoU:
    """IoU of one queried class when the model may answer "none" elsewhere.

    ``pred_is_c``: pixels the model assigned to the queried label; ``target_is_c``: pixels
    whose ground truth is that class; ignore pixels count for nothing.
    """

    def __init__(self):
        self.tp = self.fp = self.fn = self.tn = 0

    def update(self, pred_is_c: torch.Tensor, target: torch.Tensor, c: int,
               ignore_index: int = IGNORE) -> None:
        valid = target != ignore_index
        t = (target == c) & valid
        p = pred_is_c.bool() & valid
        self.tp += int((p & t).sum())
        self.fp += int((p & ~t).sum())
        self.fn += int((~p & t).sum())
        self.tn += int((~p & ~t & valid).sum())

    def iou(self) -> float:
        denom = self.tp + self.fp + self.fn
        return self.tp / denom if denom else float("nan")
