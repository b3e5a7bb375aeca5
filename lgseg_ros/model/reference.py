"""Reference models for benchmarks and FLOPs (random weights; never trained here).

- ``lseg-vitl16``: LSeg's dense image encoder: ViT-L/16 (timm ``vit_large_patch16_384``,
  any input size) + a DPT-style head (reassemble four transformer layers at strides
  4/8/16/32, refine top-down with residual conv units) -> 512-d per-pixel embeddings at
  stride 2, as LSeg.
- ``denseclip-r50-fpn``: DenseCLIP-style: ResNet-50 + FPN (torchvision) + semantic-FPN head
  to stride 4, 1024-d (CLIP RN50's text width) pixel embeddings, and DenseCLIP's context
  decoder (label tokens read the stride-32 map, T' = T + gamma * g(Z)). Omitted: CLIP's
  attention pool and the score-map concatenation into C5 (a few percent of the FLOPs).

Both take ``forward(image [B,3,H,W] in [0,1], text [K,D]) -> logits [B,K,h,w]`` (no "none"
channel: these measure cost, not the product contract).
"""
from __future__ import annotations

import math

import timm
import torch
import torch.nn.functional as F
from torch import nn

from lgseg_ros.model.configs import IMAGENET_MEAN, IMAGENET_STD
from lgseg_ros.model.fusion import make_blocks


class _Reference(nn.Module):
    text_dim: int

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.pixel_mean) / self.pixel_std

    def check_text(self, text: torch.Tensor) -> None:
        if text.dim() != 2 or text.shape[1] != self.text_dim or text.shape[0] < 1:
            raise ValueError(f"text must be [K >= 1, {self.text_dim}], got {list(text.shape)}")

    def score(self, emb: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """text: [K, D] or per-image [B, K, D]."""
        emb = F.normalize(emb, dim=1)
        t = F.normalize(text, dim=-1)
        if t.dim() == 2:
            t = t[None]
        b, _, h, w = emb.shape
        return (self.logit_scale.exp() * torch.matmul(t, emb.flatten(2))).reshape(b, -1, h, w)


class _ResidualConvUnit(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _FusionStage(nn.Module):
    """DPT's FeatureFusionBlock: refine the skip, add, refine, upsample x2, 1x1."""

    def __init__(self, c: int):
        super().__init__()
        self.skip_rcu = _ResidualConvUnit(c)
        self.rcu = _ResidualConvUnit(c)
        self.out = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = x + self.skip_rcu(skip)
        x = F.interpolate(self.rcu(x), scale_factor=2, mode="bilinear", align_corners=True)
        return self.out(x)


class LSegViTL16(_Reference):
    text_dim = 512

    def __init__(self, features: int = 256, text_dim: int = 512):
        super().__init__()
        self.text_dim = text_dim
        self.vit = timm.create_model("vit_large_patch16_384", pretrained=False, num_classes=0,
                                     dynamic_img_size=True)
        self.layers = [5, 11, 17, 23]
        c = self.vit.embed_dim
        widths = (256, 512, 1024, 1024)   # DPT-Large reassemble widths
        self.reassemble = nn.ModuleList([
            nn.Sequential(nn.Conv2d(c, widths[0], 1), nn.ConvTranspose2d(widths[0], widths[0], 4, 4)),
            nn.Sequential(nn.Conv2d(c, widths[1], 1), nn.ConvTranspose2d(widths[1], widths[1], 2, 2)),
            nn.Conv2d(c, widths[2], 1),
            nn.Sequential(nn.Conv2d(c, widths[3], 1), nn.Conv2d(widths[3], widths[3], 3, 2, 1)),
        ])
        self.project = nn.ModuleList(nn.Conv2d(w, features, 3, padding=1, bias=False) for w in widths)
        self.refine = nn.ModuleList(_FusionStage(features) for _ in widths)
        self.head = nn.Conv2d(features, text_dim, 1)          # LSeg's head1: per-pixel 512-d

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        self.check_text(text)
        maps = self.vit.forward_intermediates(self.normalize(image), indices=self.layers,
                                              intermediates_only=True)
        maps = [p(r(m)) for m, r, p in zip(maps, self.reassemble, self.project)]
        x = self.refine[3](maps[3])
        for i in (2, 1, 0):
            x = self.refine[i](x, maps[i])
        return self.score(self.head(x), text)                 # stride 2, as LSeg


class DenseCLIPR50FPN(_Reference):
    text_dim = 1024

    def __init__(self, fpn_dim: int = 256, head_dim: int = 128, text_dim: int = 1024,
                 context_layers: int = 3):
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork

        self.text_dim = text_dim
        self.body = timm.create_model("resnet50", pretrained=False, features_only=True,
                                      out_indices=(1, 2, 3, 4))
        channels = self.body.feature_info.channels()
        self.fpn = FeaturePyramidNetwork(channels, fpn_dim)
        # Semantic FPN: each level goes up to stride 4 in x2 steps, then the levels are summed.
        self.up = nn.ModuleList()
        for level in range(4):
            steps = [nn.Sequential(nn.Conv2d(fpn_dim if i == 0 else head_dim, head_dim, 3, padding=1,
                                             bias=False), nn.GroupNorm(32, head_dim), nn.ReLU())
                     for i in range(max(1, level))]
            self.up.append(nn.ModuleList(steps))
        self.embed = nn.Conv2d(head_dim, text_dim, 1)
        # Context decoder: label tokens read the stride-32 map (one-way).
        ctx = 256
        self.visual = nn.Conv2d(channels[-1], ctx, 1)
        self.token_in = nn.Sequential(nn.Linear(text_dim, ctx), nn.LayerNorm(ctx))
        self.context = make_blocks(context_layers, ctx, 4, 4.0, two_way=False)
        self.token_out = nn.Sequential(nn.LayerNorm(ctx), nn.Linear(ctx, text_dim))
        self.gamma = nn.Parameter(torch.full((text_dim,), 1e-4))

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        self.check_text(text)
        feats = self.body(self.normalize(image))
        pyramid = list(self.fpn({str(i): f for i, f in enumerate(feats)}).values())
        target = pyramid[0].shape[-2:]
        x = 0
        for level, (p, steps) in enumerate(zip(pyramid, self.up)):
            for step in steps:
                p = step(p)
                if level > 0:
                    p = F.interpolate(p, scale_factor=2, mode="bilinear", align_corners=False)
            x = x + F.interpolate(p, size=target, mode="bilinear", align_corners=False)
        v = self.visual(feats[-1])
        z = self.token_in(text)[None].expand(image.shape[0], -1, -1)
        for block in self.context:
            v, z = block(v, z)
        labels = text[None] + self.gamma * self.token_out(z)
        return self.score(self.embed(x), labels)


REFERENCES = {"lseg-vitl16": LSegViTL16, "denseclip-r50-fpn": DenseCLIPR50FPN}


def build_reference(name: str, **kw) -> _Reference:
    if name not in REFERENCES:
        raise KeyError(f"unknown reference model {name!r}; known: {', '.join(REFERENCES)}")
    return REFERENCES[name](**kw)
