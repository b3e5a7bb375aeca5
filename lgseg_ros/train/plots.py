"""Figures for training and evaluation (matplotlib, headless)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # headless: CI and robots have no display
    import matplotlib.pyplot as plt
    return plt


def _palette(names: list[str]) -> np.ndarray:
    """[len(names), 3] uint8: CamVid's own colours for CamVid, else distinct by position
    (the node's name-hash colours can put two classes of one set close together)."""
    from .datasets import CAMVID_CLASSES, CAMVID_COLORS
    if tuple(names) == CAMVID_CLASSES:
        return np.array(CAMVID_COLORS, np.uint8)
    from lgseg_ros.viz import palette_color
    return np.array([palette_color(i) for i in range(len(names))], np.uint8).reshape(-1, 3)


def _colorize(ids: np.ndarray, names: list[str]) -> np.ndarray:
    """Ignore and "none" are black."""
    lut = np.zeros((len(names) + 1, 3), np.uint8)
    lut[: len(names)] = _palette(names)
    ids = ids.astype(np.int64)
    return lut[np.where((ids >= 0) & (ids < len(names)), ids, len(names))]


def plot_confusion(cm, names: list[str], path: str | Path) -> None:
    """Row-normalised confusion (recall per class), with a "none" column."""
    plt = _plt()
    mat = cm.mat.double().numpy()
    rows = mat.sum(1, keepdims=True)
    norm = np.divide(mat, rows, out=np.zeros_like(mat), where=rows > 0)
    cols = list(names) + ["(none)"]
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(cols), 1.0 + 0.55 * len(names)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    if len(names) <= 30:
        for i in range(len(names)):
            for j in range(len(cols)):
                if norm[i, j] >= 0.01:
                    ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")
    iou = cm.iou()
    ax.set_title(f"confusion (row-normalised %), mIoU {100 * np.nanmean(iou):.1f}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_predictions(samples, names: list[str], path: str | Path) -> None:
    """One row per sample: image, ground truth, prediction."""
    plt = _plt()
    n = max(1, len(samples))
    fig, axes = plt.subplots(n, 3, figsize=(10, 2.6 * n), squeeze=False)
    for r, (img, gt, pred) in enumerate(samples):
        for c, (title, arr) in enumerate((("image", img), ("ground truth", _colorize(gt, names)),
                                          ("prediction", _colorize(pred, names)))):
            if arr.shape[:2] != gt.shape:
                import cv2
                arr = cv2.resize(arr, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_AREA)
            axes[r, c].imshow(arr)
            axes[r, c].set_axis_off()
            if r == 0:
                axes[r, c].set_title(title)
    from matplotlib.patches import Patch
    pal = _palette(names)
    handles = [Patch(color=pal[i] / 255, label=nm) for i, nm in enumerate(names[:24])]
    handles.append(Patch(color="black", label="ignore / none"))
    fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=7)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_loss(jsonl: str | Path, path: str | Path) -> None:
    plt = _plt()
    recs = [json.loads(line) for line in Path(jsonl).read_text().splitlines() if line.strip()]
    if not recs:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in recs], [r["loss"] for r in recs], alpha=0.35, label="loss")
    ax.plot([r["step"] for r in recs], [r["loss_ema"] for r in recs], label="EMA")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
