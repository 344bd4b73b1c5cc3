"""Google's released weights and the project's weight files.

Owns the registry of Google's checkpoints (:mod:`.registry`, a torchvision ``WeightsEnum``
whose values are the records of :mod:`.records`), finding and downloading files
(:mod:`.download`), converting and caching a record's checkpoint (:mod:`.google`), the
project's checkpoints with their class names and preprocessing (:mod:`.io`, on the
``.safetensors`` reading of :mod:`mobilenet_v1.hub`), reading and importing Google's
``.tflite`` files, with the integer-exact emulation of their uint8 arithmetic
(:mod:`.google_tflite`), and :func:`load_weights`, which puts them together.

May import: ``config``, ``model``, ``hub``, ``data.transforms``, ``files``, ``untrusted``, ``optional``.
"""

from .io import LoadedWeights, load_safetensors, pretrained_cfg, save_safetensors
from .load import load_weights
from .registry import (
    FINETUNE_WEIGHTS,
    WEIGHTS_LICENSE,
    WNIDS_FILE,
    MobileNetV1Weights,
    WeightsRecord,
    get_weights,
    google_config,
    read_labels,
    read_wnids,
)

__all__ = [
    "FINETUNE_WEIGHTS",
    "WEIGHTS_LICENSE",
    "WNIDS_FILE",
    "LoadedWeights",
    "MobileNetV1Weights",
    "WeightsRecord",
    "get_weights",
    "google_config",
    "load_safetensors",
    "load_weights",
    "pretrained_cfg",
    "read_labels",
    "read_wnids",
    "save_safetensors",
]
