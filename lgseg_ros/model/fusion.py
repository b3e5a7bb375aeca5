"""The fusion module: a CNN branch on the visual map X and a transformer branch on the label
tokens Z, run in parallel and joined by a two-way bridge (Mobile-Former's two
cross-attentions; "CLIP for Lightweight Semantic Segmentation", Jin and Yang 2023).

Label tokens carry no positional encoding and attention pools over tokens with a softmax,
so permuting the labels permutes the tokens and changes nothing else.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def dw_separable(dim: int) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1: spatial context at a fraction of a full conv."""
    return nn.Sequential(
        nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False), nn.BatchNorm2d(dim),
        nn.ReLU(inplace=True),
        nn.Conv2d(dim, dim, 1, bias=False), nn.BatchNorm2d(dim))


class Attention(nn.Module):
    """Multi-head attention on [B, N, C] queries over [B, M, C] keys/values.

    Not nn.MultiheadAttention: its inference fast path (aten::_native_multi_head_attention,
    taken for self-attention under no_grad) cannot be exported by the TorchScript ONNX
    exporter and is invisible to FlopCounterMode. scaled_dot_product_attention exports to
    plain MatMul/Softmax, which TensorRT parses, with N and M dynamic."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, _, c = query.shape
        h = self.heads
        q = self.q(query).reshape(b, -1, h, c // h).transpose(1, 2)
        k, v = self.kv(context).reshape(b, -1, 2, h, c // h).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, -1, c))


class Mlp(nn.Sequential):
    def __init__(self, dim: int, ratio: float):
        hidden = max(1, int(dim * ratio))
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class FusionBlock(nn.Module):
    """One block. ``two_way=False`` is the DenseCLIP-style context decoder: tokens read the
    image, the image is returned untouched (no CNN branch, no pixel->token bridge).

    x: [B, C, H, W] visual map, z: [B, N, C] tokens (N = K labels + 1 "none" token)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0, two_way: bool = True):
        super().__init__()
        self.two_way = two_way
        # bridge X->Z: tokens are queries over pixels
        self.norm_z_q = nn.LayerNorm(dim)
        self.norm_x_kv = nn.LayerNorm(dim)
        self.x2z = Attention(dim, heads)
        # transformer branch on the tokens
        self.norm_z_sa = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads)
        self.norm_z_mlp = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio)
        if two_way:
            self.conv = dw_separable(dim)          # CNN branch on the visual map
            # bridge Z->X: pixels are queries over tokens
            self.norm_x_q = nn.LayerNorm(dim)
            self.norm_z_kv = nn.LayerNorm(dim)
            self.z2x = Attention(dim, heads)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        pixels = x.permute(0, 2, 3, 1).reshape(b, h * w, c)         # [B, HW, C]
        z = z + self.x2z(self.norm_z_q(z), self.norm_x_kv(pixels))
        zn = self.norm_z_sa(z)
        z = z + self.self_attn(zn, zn)
        z = z + self.mlp(self.norm_z_mlp(z))
        if not self.two_way:
            return x, z
        # The CNN branch reads the incoming map, in parallel with the token branch above.
        pixels = (x + self.conv(x)).permute(0, 2, 3, 1).reshape(b, h * w, c)
        pixels = pixels + self.z2x(self.norm_x_q(pixels), self.norm_z_kv(z))
        return pixels.reshape(b, h, w, c).permute(0, 3, 1, 2), z


def make_blocks(n: int, dim: int, heads: int, mlp_ratio: float, two_way: bool) -> nn.ModuleList:
    return nn.ModuleList(FusionBlock(dim, heads, mlp_ratio, two_way) for _ in range(n))
