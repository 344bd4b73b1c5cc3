"""Deployment: batch norm folded (:mod:`.fold`), ONNX export and the one ONNX Runtime
wrapper (:mod:`.onnx`), int8 (:mod:`.quantize`: the one ``export_int8``, with
quantization-aware fine-tuning from :mod:`.qat`), the PyTorch-native compiled path
(:mod:`.compiled`) and AOTInductor package (:mod:`.pt2`), ExecuTorch for phones
(:mod:`.executorch`), and every format by name with the one loader of exported files
(:mod:`.exported`).

May import: ``config``, ``model``, ``data``, ``weights``, ``files``, ``untrusted``, ``optional``.
"""
