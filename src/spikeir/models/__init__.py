"""Model classes, named presets and construction from a config dict.

A model config is a plain dict: ``{"name": "spiking_dncnn", "depth": 17, ...}``; every key
besides ``name`` is a constructor argument of the class.
"""

from __future__ import annotations

from torch import nn

from .esdnet import ESDNet, ESDNetANN
from .nafnet import NAFNet
from .spiking_dncnn import DnCNN, SpikingDnCNN
from .spiking_unet import SpikingUNet

__all__ = ["MODELS", "PRESETS", "build_model", "SpikingDnCNN", "DnCNN", "ESDNet", "ESDNetANN", "NAFNet", "SpikingUNet",
           "is_spiking"]

MODELS: dict[str, type[nn.Module]] = {
    "spiking_dncnn": SpikingDnCNN,
    "dncnn": DnCNN,
    "esdnet": ESDNet,
    "esdnet_ann": ESDNetANN,
    "nafnet": NAFNet,
    "spiking_unet": SpikingUNet,
}

# name -> model config; "task" and "sigma" describe what the preset is for.
PRESETS: dict[str, dict] = {
    "spiden": {"name": "spiking_dncnn", "in_channels": 1, "depth": 17, "width": 64, "T": 4},
    "dncnn-17": {"name": "dncnn", "in_channels": 1, "depth": 17, "width": 64},
    "spiden-cpu": {
        "name": "spiking_dncnn", "in_channels": 1, "depth": 10, "width": 32, "T": 4,
        "neuron_kwargs": {"v_init": "half"},
    },
    "dncnn-cpu": {"name": "dncnn", "in_channels": 1, "depth": 10, "width": 32},
    # ESDNet as released (12.8 M parameters), a small variant (the parity fixture's layout) and twins
    "esdnet": {"name": "esdnet", "in_channels": 3, "out_channels": 3, "dim": 48,
               "en_num_blocks": [4, 4, 8], "de_num_blocks": [2, 2, 2], "T": 4},
    "esdnet-small": {"name": "esdnet", "in_channels": 3, "out_channels": 3, "dim": 16,
                 "en_num_blocks": [1, 1, 2], "de_num_blocks": [1, 1, 1], "T": 4},
    "esdnet-ann": {"name": "esdnet_ann", "in_channels": 3, "out_channels": 3, "dim": 48,
                   "en_num_blocks": [4, 4, 8], "de_num_blocks": [2, 2, 2]},
    "esdnet-small-ann": {"name": "esdnet_ann", "in_channels": 3, "out_channels": 3, "dim": 16,
                         "en_num_blocks": [1, 1, 2], "de_num_blocks": [1, 1, 1]},
    # a small NAFNet: the ANN teacher for distillation (gray; set in_channels=3 for colour)
    "nafnet-s": {"name": "nafnet", "in_channels": 1, "width": 16, "enc_blk_nums": [1, 1, 2],
                 "middle_blk_num": 2, "dec_blk_nums": [1, 1, 1]},
    # the compact spiking encoder-decoder student (about 1/11 of nafnet-s's parameters)
    "spiking-unet-s": {"name": "spiking_unet", "in_channels": 1, "width": 8, "blocks": [1, 1], "middle": 1, "T": 4},
}


def _import_class(path: str) -> type[nn.Module]:
    """``"package.module:Class"`` -> the class (a model of the user's own, named in YAML)."""
    import importlib

    mod_name, _, cls_name = path.partition(":")
    if not mod_name or not cls_name:
        raise ValueError(f"model class must be given as 'package.module:Class', got {path!r}")
    try:
        obj = getattr(importlib.import_module(mod_name), cls_name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot import model class {path!r}: {e}") from None
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise ValueError(f"model class {path!r} is not a torch.nn.Module subclass")
    return obj


def build_model(cfg: dict) -> nn.Module:
    """Instantiate a model from its config dict: ``name`` (one of :data:`MODELS`) or ``class``
    (``"package.module:Class"``, any ``nn.Module`` importable here) plus constructor arguments."""
    cfg = dict(cfg)
    if "class" in cfg:
        path = cfg.pop("class")
        cfg.pop("name", None)
        cls = _import_class(str(path))
        label = str(path)
    else:
        name = cfg.pop("name", None)
        if name not in MODELS:
            raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
        cls, label = MODELS[name], name
    try:
        return cls(**cfg)
    except TypeError as e:
        raise ValueError(f"bad arguments for model {label!r}: {e}") from None


def is_spiking(model: nn.Module) -> bool:
    from ..neurons import BaseNeuron

    return any(isinstance(m, BaseNeuron) for m in model.modules())
