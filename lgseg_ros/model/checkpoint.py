"""Checkpoints: safetensors (no pickle, so loading a file cannot run code) whose metadata
records the format version, the ModelConfig as JSON and optional extra metadata (for
example the label names trained on). A checkpoint alone rebuilds its network."""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lgseg_ros.labels import shown
from lgseg_ros.model.configs import ModelConfig

if TYPE_CHECKING:  # the metadata readers run in torch-free installs (runtime/artefacts.py)
    import torch
    from torch import nn

FORMAT = "lgseg-checkpoint"
FORMAT_VERSION = 1
# The shipped checkpoint's header is 58 KB (516 tensors plus the config); 16 MB is far beyond
# any real one and bounds what a corrupt length field can make us read.
_MAX_HEADER = 16 * 1024 * 1024


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded; the message says what is wrong with it."""


def save_checkpoint(path: str | os.PathLike, net: nn.Module, cfg: ModelConfig,
                    extra_metadata: dict[str, Any] | None = None) -> Path:
    from safetensors.torch import save_file

    own = getattr(net, "cfg", None)
    if own is not None and own != cfg:
        raise ValueError(f"config {cfg.name!r} does not describe this network (built from "
                         f"{own.name!r}); save the config the network was built with")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "config": cfg.to_json(),
                "extra": json.dumps(extra_metadata or {}, sort_keys=True)}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)   # a reader never sees a half-written checkpoint
    return path


# safetensors dtype -> bytes per element; anything else is refused before allocation.
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                "U8": 1, "BOOL": 1}
# The model's tensors have at most 4 dimensions (conv weights); 8 leaves room and bounds the
# work one shape can ask for.
_MAX_DIMS = 8


def max_checkpoint_bytes() -> int:
    """The largest tensor payload a checkpoint may describe: $LGSEG_MAX_CHECKPOINT_MB, else
    256 MB (the shipped model is 17.5 MB; every shipped config is under 18 MB)."""
    try:
        return max(1, int(os.environ.get("LGSEG_MAX_CHECKPOINT_MB", "256"))) << 20
    except ValueError:
        return 256 << 20


def _header_from(f, path: Path, size: int) -> tuple[dict[str, Any], int]:
    """Read and check the header from the open file ``f`` of ``size`` bytes. Every entry's
    dtype, shape and offsets must agree, the entries must tile the data exactly, and the
    data must be the rest of the file and no larger than max_checkpoint_bytes(): a few
    hundred bytes describing gigabytes are refused here, before anything is allocated."""
    head = f.read(8)
    n = struct.unpack("<Q", head)[0] if len(head) == 8 else None
    plausible = n is not None and n <= _MAX_HEADER and 8 + n <= size
    # torch.save writes a zip ("PK\x03\x04") or a pickle ("\x80" + protocol). A safetensors
    # header length whose low byte is 0x80 starts with "\x80" too (1 file in 256: a
    # training run's checkpoint was refused as a pickle), so that alone proves nothing.
    if head[:4] == b"PK\x03\x04" or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03",
                                                                          b"\x04", b"\x05")
                                       and not plausible):
        raise CheckpointError(
            f"{path} is a pickle (torch.save) file, not a safetensors checkpoint; refusing "
            "to unpickle it. Re-save it with lgseg_ros.model.save_checkpoint")
    if n is None:
        raise CheckpointError(f"{path} is truncated or empty ({size} bytes)")
    if not plausible:
        raise CheckpointError(f"{path} is truncated or not a safetensors file (header claims "
                              f"{n} bytes, file has {size}; at most {_MAX_HEADER} accepted)")
    raw = f.read(n)
    if len(raw) != n:
        raise CheckpointError(f"{path} is truncated: it shrank while being read")
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # RecursionError: 50,000 nested brackets (100 KB) ended configure with Python's bare
        # "maximum recursion depth exceeded", naming no file (audit round 19)
        raise CheckpointError(f"{path} is not a safetensors file (unreadable header)") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a safetensors file (header is not a JSON object)")
    limit = max_checkpoint_bytes()
    spans = []
    for name, t in header.items():
        if name == "__metadata__":
            continue
        what = f"{path}: tensor {shown(name)}"
        try:
            width = _DTYPE_BYTES[t["dtype"]]
            shape, offsets = t["shape"], t["data_offsets"]
        except (KeyError, TypeError):
            raise CheckpointError(f"{what} has an unreadable or unsupported entry (dtype, "
                                  "shape, data_offsets)") from None
        # int(d) took floats: 16,000 dims of 1e308 (a 96 KB header) are 1,024-bit integers
        # whose product took 136 s, then failed formatting it into this message (audit
        # round 19). Only plain ints, few dims, and a running size that stops at the cap.
        if not isinstance(shape, list) or len(shape) > _MAX_DIMS:
            raise CheckpointError(f"{what}: shape must be a list of at most {_MAX_DIMS} dimensions")
        nbytes = width
        for d in shape:
            if type(d) is not int or d < 0:   # type(): bools and floats are refused too
                raise CheckpointError(f"{what}: shape has {shown(d)}, not a non-negative integer")
            nbytes *= d
            if nbytes > limit:
                raise CheckpointError(f"{what}: its shape describes more than the {limit >> 20} "
                                      "MB accepted (LGSEG_MAX_CHECKPOINT_MB)")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or any(type(o) is not int for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= limit):
            # the values are not shown: one may be an integer of thousands of digits
            raise CheckpointError(f"{what}: data_offsets must be two integers, 0 <= begin <= "
                                  f"end <= {limit} (LGSEG_MAX_CHECKPOINT_MB)")
        lo, hi = offsets
        if hi - lo != nbytes:
            raise CheckpointError(f"{what} claims {nbytes} bytes but its offsets span {hi - lo}")
        spans.append((lo, hi))
    spans.sort()
    end = 0
    for lo, hi in spans:
        if lo != end:
            raise CheckpointError(f"{path} is corrupt: tensor data overlaps or leaves gaps")
        end = hi
    if 8 + n + end != size:
        raise CheckpointError(f"{path} is truncated or corrupt: its header describes "
                              f"{8 + n + end} bytes, the file has {size}")
    return header, n


def _open_checkpoint(path: Path):
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    return path.open("rb")


def _read_header(path: Path) -> dict[str, Any]:
    """Check the file is a complete safetensors file and return its header."""
    with _open_checkpoint(path) as f:
        return _header_from(f, path, os.fstat(f.fileno()).st_size)[0]


def _metadata_of(header: dict[str, Any], path: Path) -> tuple[ModelConfig, dict[str, Any]]:
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not an lgseg checkpoint "
                              "(no lgseg metadata); save with lgseg_ros.model.save_checkpoint")
    try:
        version = int(meta.get("format_version", "0"))
    except (TypeError, ValueError):
        raise CheckpointError(f"{path}: unreadable format_version") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {version}; this lgseg_ros reads "
                              f"up to {FORMAT_VERSION}. Upgrade lgseg_ros")
    try:
        cfg = ModelConfig.from_json(meta["config"])
        extra = json.loads(meta.get("extra", "{}"))
    except (KeyError, ValueError, TypeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: the recorded model config is invalid: {str(exc)[:300]}") from None
    if not isinstance(extra, dict):   # "[1]" raised AttributeError in every reader (audit round 17)
        raise CheckpointError(f"{path}: the recorded extra metadata is not an object")
    problem = backbone_kwargs_problem(cfg.backbone_kwargs)
    if problem:
        raise CheckpointError(f"{path}: the recorded config's backbone_kwargs {problem}")
    return cfg, extra


# What a checkpoint's backbone_kwargs may pass to timm.create_model. It also takes
# checkpoint_path, pretrained, pretrained_cfg(_overlay), cache_dir...: a recorded
# {"checkpoint_path": "x.pth"} made timm unpack that file whenever the network was built,
# even on the meta device for the shape check (a 0.5 MB deflate bomb became a 512 MB
# tensor past max_checkpoint_bytes(), audit round 19). Only regularisation and BatchNorm
# numbers, each in [0, 1]; no shipped config sets any. features_only, out_indices and
# norm_layer are lgseg's own to set (out_indices is a config field).
BACKBONE_KWARGS = frozenset({"drop_rate", "drop_path_rate", "bn_eps", "bn_momentum"})


def backbone_kwargs_problem(kwargs: object) -> str | None:
    """Why a loaded checkpoint may not carry these backbone_kwargs, or None."""
    if not isinstance(kwargs, dict):
        return "is not an object"
    for key, value in kwargs.items():
        if key not in BACKBONE_KWARGS:
            return (f"has {shown(key)}, which a checkpoint may not set (allowed: "
                    f"{', '.join(sorted(BACKBONE_KWARGS))})")
        if type(value) not in (int, float) or not 0 <= value <= 1:   # type(): no bools
            return f"has {key}={shown(value)}, not a number from 0 to 1"
    return None


def read_checkpoint_metadata(path: str | os.PathLike) -> tuple[ModelConfig, dict[str, Any]]:
    """The config and extra metadata of a checkpoint, without loading its tensors."""
    path = Path(path)
    return _metadata_of(_read_header(path), path)


# What a recorded config may ask for before anything is built from it: each far above every
# shipped config (dim 128, 2 blocks), so that a few hundred bytes of JSON cannot make
# building the network itself take gigabytes or minutes.
_CONFIG_BOUNDS = {"dim": 4096, "text_dim": 8192, "fusion_blocks": 32, "heads": 256,
                  "mlp_ratio": 32.0, "num_classes": 65535}


def _check_config_bounds(cfg: ModelConfig, path: Path) -> None:
    for name, bound in _CONFIG_BOUNDS.items():
        value = getattr(cfg, name)
        if not 0 <= value <= bound:
            raise CheckpointError(f"{path}: recorded config has {name}={value}, outside 0 to {bound}")


def _expected_tensors(cfg: ModelConfig, path: Path) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Names, shapes and dtypes of the network ``cfg`` describes, from a build on the meta
    device: no memory is allocated for its weights."""
    import torch

    from lgseg_ros.model.net import build_model

    _check_config_bounds(cfg, path)
    try:
        with torch.device("meta"):
            net = build_model(cfg, load_weights=False)
    except Exception as exc:  # noqa: BLE001 - re-raised with context
        raise CheckpointError(f"{path}: cannot build the recorded model {cfg.name!r}: {exc}") from exc
    return {k: (tuple(v.shape), v.dtype) for k, v in net.state_dict().items()}


def _torch_dtype(code: str):
    """safetensors dtype code -> torch dtype (torch imported here: the metadata readers
    above run in torch-free installs)."""
    import torch

    return {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
            "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32,
            "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}[code]


def _config_diff(a: ModelConfig, b: ModelConfig) -> list[str]:
    da, db = a.to_dict(), b.to_dict()
    return [f"{k}: {da[k]!r} != {db[k]!r}" for k in da if da[k] != db[k] and k != "name"]


def load_checkpoint(path: str | os.PathLike, expected: ModelConfig | None = None,
                    device: str | torch.device = "cpu") -> tuple[nn.Module, ModelConfig]:
    """Rebuild the network from a checkpoint: ``net, cfg = load_checkpoint(path)``.

    ``expected``: fail unless the recorded config matches it (a node configured for one
    model must not silently run another). The network comes back in eval mode.

    The file is read, never memory-mapped: a checkpoint truncated or overwritten while it
    loads (a `cp` of a new model over the old one) made a mapped read end the process with
    SIGBUS; a read just comes back short, and the load fails with the reason. Everything
    is read from one open file, and its header is checked against the size of the file,
    against max_checkpoint_bytes() and against the network the recorded config describes
    before the tensor data is read at all."""
    import torch

    from lgseg_ros.model.net import build_model

    path = Path(path)
    with _open_checkpoint(path) as f:
        size = os.fstat(f.fileno()).st_size
        header, n = _header_from(f, path, size)
        cfg, extra = _metadata_of(header, path)
        if expected is not None:
            diff = _config_diff(expected, cfg)
            if diff:
                raise CheckpointError(f"{path} holds a different model than expected: " + "; ".join(diff))
        own = _expected_tensors(cfg, path)
        found = {k: tuple(int(d) for d in t["shape"]) for k, t in header.items() if k != "__metadata__"}
        missing = sorted(set(own) - set(found))
        unexpected = sorted(set(found) - set(own))
        shapes = [f"{k} {found[k]} vs {own[k][0]}" for k in own if k in found and found[k] != own[k][0]]
        if missing or unexpected or shapes:
            parts = []
            if shapes:
                parts.append(f"{len(shapes)} shape mismatches (file vs config), e.g. {shapes[:2]}")
            if missing:
                parts.append(f"{len(missing)} missing tensors, e.g. {missing[:3]}")
            if unexpected:
                parts.append(f"{len(unexpected)} unexpected tensors, e.g. {[u[:80] for u in unexpected[:3]]}")
            raise CheckpointError(f"{path}: tensors do not match the recorded config "
                                  f"{cfg.name!r}: " + "; ".join(parts))
        data = bytearray(size - 8 - n)
        got = f.readinto(data)
        if got != len(data) or f.read(1):
            raise CheckpointError(f"{path} is truncated or was replaced while loading "
                                  f"({got} of {len(data)} data bytes read)")
    state = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        lo, hi = t["data_offsets"]
        dtype = _torch_dtype(t["dtype"])
        shape = found[name]
        if hi == lo:
            state[name] = torch.empty(shape, dtype=dtype)
        else:
            state[name] = torch.frombuffer(data, dtype=dtype, count=(hi - lo) // _DTYPE_BYTES[t["dtype"]],
                                           offset=lo).reshape(shape)
    try:
        net = build_model(cfg, load_weights=False)
    except Exception as exc:  # noqa: BLE001 - re-raised with context
        raise CheckpointError(f"{path}: cannot build the recorded model {cfg.name!r}: {exc}") from exc
    try:
        net.load_state_dict(state, strict=True)  # copies: `data` is freed with `state`
    except RuntimeError as exc:  # a dtype load_state_dict cannot cast
        raise CheckpointError(f"{path}: tensors do not load into {cfg.name!r}: {str(exc)[:300]}") from exc
    net.checkpoint_metadata = extra
    return net.to(device).eval(), cfg
