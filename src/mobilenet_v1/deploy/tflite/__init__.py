"""LiteRT (``.tflite``) export and running the exported files.

The flatbuffer is written by the project (:mod:`.schema`) from the folded model laid out
as Google's own operator chain (:mod:`.graph`), in float32 or in Google's uint8 form
with its own or calibrated grids (:mod:`.grids`); :mod:`.export` writes and checks it
(against PyTorch, and byte for byte against the int8-exact emulation), :mod:`.runtime`
runs it under LiteRT with the labels and preprocessing it carries.

May import what ``deploy`` may import (the model, ``data``, ``weights``, ``files``,
``untrusted``) and the rest of ``deploy``.
"""

from .export import export_tflite
from .runtime import TFLiteModel, load_tflite_model

__all__ = ["TFLiteModel", "export_tflite", "load_tflite_model"]
