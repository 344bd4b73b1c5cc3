"""LiteRT (``.tflite``): writing our models and running any ``.tflite`` file.

The flatbuffer is written by the project (:mod:`.schema`) from the folded model laid out
as Google's own operator chain (:mod:`.graph`), in float32 or in Google's uint8 form
with its own or calibrated grids (:mod:`.grids`); :mod:`.export` writes and checks it
(against PyTorch, and byte for byte against the int8-exact emulation), :mod:`.runtime`
runs it, or Google's own files, under LiteRT. Reading Google's files into our model is
``weights.google_tflite``'s.

May import: ``config``, ``model``, ``fold``, ``data``, ``weights``, ``files``, ``untrusted``, ``optional``.
"""

from .export import export_tflite
from .runtime import LiteRTModel, load_litert

__all__ = ["LiteRTModel", "export_tflite", "load_litert"]
