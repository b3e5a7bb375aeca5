"""Heads sharing one light FPN decoder (strides 32 -> 16 -> 8), so the variants differ only
in how labels and pixels meet:

- ``lseg``: no bridge; logits = tau * cos(E, T) (LSeg).
- ``denseclip``: label tokens read the image (one-way); T' = T + gamma * g(Z) (DenseCLIP).
- ``fusion``: two-way bridge with a CNN branch; T' = T + gamma * g(Z).
- ``closed``: a fixed-class 1x1 classifier, for reference; text values are ignored.

Every text head scores a learned "none of these" embedding as label K.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lgseg_ros.model.configs import ModelConfig
from lgseg_ros.model.fusion import dw_separable, make_blocks


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def upsample_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


class FPNDecoder(nn.Module):
    """Lateral 1x1 projections and a top-down sum; ``run_level(stride, x, z)`` is where a
    head refines the map (and its tokens) at strides 32 and 16."""

    def __init__(self, channels: list[int], dim: int):
        super().__init__()
        self.lateral = nn.ModuleList(conv_bn_relu(c, dim) for c in channels)   # s8, s16, s32
        self.smooth = nn.Sequential(dw_separable(dim), nn.ReLU(inplace=True))

    def forward(self, feats: list[torch.Tensor], run_level) -> tuple[torch.Tensor, object]:
        c3, c4, c5 = feats
        x, z = run_level(32, self.lateral[2](c5), None)
        x = self.lateral[1](c4) + upsample_to(x, c4)
        x, z = run_level(16, x, z)
        x = self.lateral[0](c3) + upsample_to(x, c3)
        return self.smooth(x), z


class TextHead(nn.Module):
    """fusion / denseclip / lseg: per-pixel embeddings E scored against label embeddings."""

    def __init__(self, cfg: ModelConfig, channels: list[int]):
        super().__init__()
        self.mode = cfg.head
        d, dim = cfg.text_dim, cfg.dim
        self.decoder = FPNDecoder(channels, dim)
        self.embed = nn.Conv2d(dim, d, 1)                        # per-pixel embedding E
        self.none_embedding = nn.Parameter(F.normalize(torch.randn(d), dim=0))
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.logit_scale_init)))
        self.logit_scale_max = float(cfg.logit_scale_max)
        self.bridged = self.mode in ("fusion", "denseclip")
        if self.bridged:
            two_way = self.mode == "fusion"
            self.token_in = nn.Sequential(nn.Linear(d, dim), nn.LayerNorm(dim))
            self.levels = nn.ModuleDict({
                f"s{s}": make_blocks(cfg.fusion_blocks, dim, cfg.heads, cfg.mlp_ratio, two_way)
                for s in cfg.fusion_levels})
            self.token_out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, d))   # g(Z)
            # DenseCLIP's gamma: the label embeddings start as the frozen text embeddings.
            self.gamma = nn.Parameter(torch.full((d,), float(cfg.gamma_init)))

    def forward(self, feats: list[torch.Tensor], text: torch.Tensor) -> torch.Tensor:
        labels = torch.cat([text, self.none_embedding[None].to(text.dtype)], 0)   # [K+1, D]
        batch = feats[0].shape[0]
        tokens = self.token_in(labels)[None].expand(batch, -1, -1) if self.bridged else None

        def run_level(stride: int, x: torch.Tensor, z):
            z = tokens if z is None else z
            if self.bridged and f"s{stride}" in self.levels:
                for block in self.levels[f"s{stride}"]:
                    x, z = block(x, z)
            return x, z

        x, z = self.decoder(feats, run_level)
        emb = self.embed(x)                                                     # [B, D, h, w]
        if self.bridged:
            labels = labels[None] + self.gamma * self.token_out(z)              # [B, K+1, D]
        else:
            labels = labels[None]                                               # [1, K+1, D]
        labels = F.normalize(labels, dim=-1)
        scale = self.logit_scale.exp().clamp(max=self.logit_scale_max)
        b, d, h, w = emb.shape
        # Cosine scores, computed pixel-major: score first, divide by the pixel norm after
        # (F.normalize's x / max(|x|, eps) on [hw, K+1] instead of [D, hw]), and hand the
        # frame path's channels-last tail a map whose permute cancels with its own. Permute
        # before the reshape (not flatten-then-transpose): ONNX Runtime then folds the permute
        # into the convolution's channels-last output (fp32 ReorderOutput, int8 NHWC
        # QLinearConv), where the other order left two full transposes in the int8 graph.
        tokens = emb.permute(0, 2, 3, 1).reshape(b, h * w, d)                    # [B, hw, D]
        norm = tokens.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        logits = torch.matmul(tokens, labels.transpose(1, 2)) * (scale / norm)  # [B, hw, K+1]
        return logits.reshape(b, h, w, -1).permute(0, 3, 1, 2)                  # [B, K+1, h, w]


class ClosedHead(nn.Module):
    """Closed-set reference: num_classes + 1 ("none") fixed outputs."""

    def __init__(self, cfg: ModelConfig, channels: list[int]):
        super().__init__()
        self.num_classes = cfg.num_classes
        self.decoder = FPNDecoder(channels, cfg.dim)
        self.classifier = nn.Conv2d(cfg.dim, cfg.num_classes + 1, 1)

    def forward(self, feats: list[torch.Tensor], text: torch.Tensor) -> torch.Tensor:
        if text.shape[0] != self.num_classes:
            raise ValueError(f"the closed-set head was built for {self.num_classes} classes and "
                             f"cannot take {text.shape[0]} labels; use a text head "
                             "(fusion, lseg, denseclip) for open label sets")
        x, _ = self.decoder(feats, lambda stride, x, z: (x, z))
        return self.classifier(x)


def build_head(cfg: ModelConfig, channels: list[int]) -> nn.Module:
    return ClosedHead(cfg, channels) if cfg.head == "closed" else TextHead(cfg, channels)
