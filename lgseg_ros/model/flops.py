"""`lgseg flops`: parameters and GFLOPs of model variants at a given input size.

Counts with torch's FlopCounterMode (convolutions, matmuls, attention; elementwise ops and
resizes are not counted; 1 multiply-add = 2 FLOPs). Models are built on the meta device:
shapes only, no memory and no arithmetic, so even ViT-L counts in a second on a laptop.
The text encoder is excluded: it runs once per label change, not per frame.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

VARIANTS = {"fusion": "lite-minilm", "lseg": "lite-minilm-lseg",
            "denseclip": "lite-minilm-denseclip", "closed": "lite-minilm-closed"}
REFERENCES = ("lseg-vitl16", "denseclip-r50-fpn")
DEFAULT_VARIANTS = ("fusion", "lseg", "denseclip", "lseg-vitl16", "denseclip-r50-fpn")


def _build(variant: str) -> tuple[torch.nn.Module, str, int, int | None]:
    """-> (model, model name, text dim, fixed K or None)."""
    from lgseg_ros.model.configs import CONFIGS, get_config
    from lgseg_ros.model.net import build_model
    from lgseg_ros.model.reference import build_reference

    if variant in REFERENCES:
        model = build_reference(variant)
        return model, variant, model.text_dim, None
    name = VARIANTS.get(variant, variant)
    if name not in CONFIGS:
        raise KeyError(f"unknown variant {variant!r}; use one of "
                       f"{', '.join([*VARIANTS, *REFERENCES, *CONFIGS])}")
    cfg = get_config(name)
    return build_model(cfg, load_weights=False), name, cfg.text_dim, (
        cfg.num_classes if cfg.head == "closed" else None)


def measure(variant: str, size: tuple[int, int], num_labels: int, batch: int = 1) -> dict[str, Any]:
    with torch.device("meta"):
        model, name, dim, fixed_k = _build(variant)
        k = fixed_k or num_labels
        image = torch.rand(batch, 3, *size)
        text = torch.randn(k, dim)
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        out = model(image, text)
    flops = counter.get_total_flops()
    return {"variant": variant, "model": name, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "gflops": flops / 1e9, "gmacs": flops / 2e9, "input": [batch, 3, *size],
            "num_labels": k, "output": list(out.shape)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lgseg flops", description=__doc__.splitlines()[0])
    parser.add_argument("--size", nargs=2, type=int, default=[384, 480], metavar=("H", "W"))
    parser.add_argument("--num-labels", type=int, default=11)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS),
                        help=f"any of {', '.join([*VARIANTS, *REFERENCES])} or a config name")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.num_labels < 1:
        parser.error("--num-labels must be at least 1")
    rows = [measure(v, tuple(args.size), args.num_labels, args.batch) for v in args.variants]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    h, w = args.size
    print(f"input {args.batch}x3x{h}x{w}, K={args.num_labels} labels; FlopCounterMode "
          "(1 MAC = 2 FLOPs), text encoder excluded")
    print(f"{'variant':<18} {'model':<22} {'params(M)':>9} {'GFLOPs':>9} {'GMACs':>8}  output")
    for r in rows:
        print(f"{r['variant']:<18} {r['model']:<22} {r['params_m']:>9.2f} {r['gflops']:>9.2f} "
              f"{r['gmacs']:>8.2f}  {'x'.join(map(str, r['output']))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
