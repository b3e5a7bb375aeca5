"""Weight averaging of checkpoints of one model ("model soup", WiSE-FT style).

Two stages of the same fine-tuning lie in one basin of the loss; their weighted mean often
keeps what each stage learnt better than either end (the rooms model's stages 6 and 7 traded
streets for rooms). Floating-point tensors are averaged, integer buffers (BatchNorm's
step counters) are taken from the first checkpoint. The metadata (trained vocabulary,
distractors, sources) comes from the first checkpoint too, with the recipe recorded under
``averaged_from``, so the grounding report of the result covers the same words.

    lgseg average A.safetensors B.safetensors --weights 0.5 0.5 --out soup.safetensors
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence


def average_checkpoints(paths: Sequence[str | Path], weights: Sequence[float] | None,
                        out: str | Path) -> Path:
    """Write the weighted mean of ``paths`` (same ModelConfig, same tensors) to ``out``."""
    import torch

    from lgseg_ros.model.checkpoint import load_checkpoint, read_checkpoint_metadata, save_checkpoint
    from lgseg_ros.runtime.engine_cache import sha256_file

    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise SystemExit("average: give at least two checkpoints")
    weights = list(weights) if weights else [1.0 / len(paths)] * len(paths)
    if len(weights) != len(paths):
        raise SystemExit(f"average: {len(weights)} --weights for {len(paths)} checkpoints")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise SystemExit(f"average: --weights must be >= 0 with a positive sum, got {weights}")
    total = float(sum(weights))
    weights = [w / total for w in weights]

    net, cfg = load_checkpoint(paths[0])
    _, extra = read_checkpoint_metadata(paths[0])
    state = {k: v.clone() for k, v in net.state_dict().items()}
    floats = [k for k, v in state.items() if v.is_floating_point()]
    for k in floats:
        state[k] = state[k].double() * weights[0]
    for p, w in zip(paths[1:], weights[1:]):
        # expected=cfg: averaging two different architectures is meaningless; load refuses it
        other, _ = load_checkpoint(p, expected=cfg)
        theirs = other.state_dict()
        for k in floats:
            state[k] += theirs[k].double() * w
    with torch.no_grad():
        net.load_state_dict({k: (v.float() if k in floats else v) for k, v in state.items()})
    extra = dict(extra)
    extra["averaged_from"] = [{"file": p.name, "sha256": sha256_file(p), "weight": round(w, 6)}
                              for p, w in zip(paths, weights)]
    return save_checkpoint(out, net, cfg, extra_metadata=extra)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lgseg average", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", help="checkpoints of one model (same config)")
    p.add_argument("--weights", type=float, nargs="+", default=None,
                   help="one weight per checkpoint (normalised to sum 1; default: equal)")
    p.add_argument("--out", required=True, help="where to write the averaged checkpoint")
    args = p.parse_args(argv)
    out = average_checkpoints(args.checkpoints, args.weights, args.out)
    print(json.dumps({"out": str(out), "sources": args.checkpoints,
                      "weights": args.weights or "equal"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
