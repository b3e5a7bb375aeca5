"""The ROS-free segmentation model: backbones, fusion module, heads, configs, checkpoints.

Reference models (``build_reference``) and the ``flops`` command import lazily."""
from lgseg_ros.model.checkpoint import (CheckpointError, load_checkpoint, read_checkpoint_metadata,
                                        save_checkpoint)
from lgseg_ros.model.configs import ModelConfig, get_config, list_configs
from lgseg_ros.model.net import LGSegNet, build_model


def build_reference(name: str, **kw):
    from lgseg_ros.model.reference import build_reference as _build

    return _build(name, **kw)


__all__ = ["CheckpointError", "LGSegNet", "ModelConfig", "build_model", "build_reference",
           "get_config", "list_configs", "load_checkpoint", "read_checkpoint_metadata",
           "save_checkpoint"]
