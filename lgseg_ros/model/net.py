"""LGSegNet: image [B,3,H,W] in [0,1] + label embeddings [K,D] -> logits [B,K+1,H/8,W/8]."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lgseg_ros.model.backbones import Backbone
from lgseg_ros.model.configs import ModelConfig
from lgseg_ros.model.heads import build_head

OUTPUT_STRIDE = 8


class LGSegNet(nn.Module):
    def __init__(self, cfg: ModelConfig, load_weights: bool = True):
        super().__init__()
        self.cfg = cfg
        self.text_dim = cfg.text_dim
        self.backbone = Backbone(cfg.backbone, cfg.backbone_weights, cfg.out_indices,
                                 cfg.backbone_kwargs, load_weights=load_weights)
        self.head = build_head(cfg, self.backbone.channels)
        # Not persistent: they follow from the config, which the checkpoint records.
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(1, 3, 1, 1), False)

    def check_inputs(self, image: torch.Tensor, text: torch.Tensor) -> None:
        # Shape checks only, never tensor values. Skipped under TorchScript tracing, where
        # K is the export's dynamic axis and a Python check would freeze it.
        if torch.jit.is_tracing():
            return
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be [B, 3, H, W], got {list(image.shape)}")
        if text.dim() != 2 or text.shape[1] != self.text_dim:
            raise ValueError(f"text must be [K, {self.text_dim}] label embeddings "
                             f"(text encoder {self.cfg.text_encoder!r}), got {list(text.shape)}")
        if text.shape[0] < 1:
            raise ValueError("empty label set (K = 0): give at least one label embedding")

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Channels 0..K-1 follow the rows of ``text``; channel K is "none of these".

        Output size is ceil(H/8) x ceil(W/8); H and W need not be multiples of 32: the
        decoder resizes each coarser map to the next finer one (360x480 -> 45x60)."""
        self.check_inputs(image, text)
        x = (image - self.pixel_mean) / self.pixel_std
        logits = self.head(self.backbone(x), text.to(x.dtype))
        out_h = -(-image.shape[-2] // OUTPUT_STRIDE)
        out_w = -(-image.shape[-1] // OUTPUT_STRIDE)
        if logits.shape[-2] != out_h or logits.shape[-1] != out_w:
            # Backbones that floor odd sizes (patchify stems) are brought back to the contract.
            logits = F.interpolate(logits, size=(out_h, out_w), mode="bilinear", align_corners=False)
        return logits


def build_model(cfg: ModelConfig | str, load_weights: bool = True) -> LGSegNet:
    """``load_weights=False`` skips pretrained backbone weights (a checkpoint will overwrite
    them anyway)."""
    from lgseg_ros.model.configs import get_config

    if isinstance(cfg, str):
        cfg = get_config(cfg)
    return LGSegNet(cfg, load_weights=load_weights)
