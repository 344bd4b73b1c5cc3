"""Deployment: every export format by name, with the one exporter and the one loader of
exported files (:mod:`.formats`); what the formats share (:mod:`.common`: the report,
the metadata each file carries and its checked reading, ``torch.export``); ONNX export
and the one ONNX Runtime wrapper (:mod:`.onnx`); int8 ONNX (:mod:`.quantize`, with
quantization-aware fine-tuning from :mod:`.qat`); LiteRT, writing our ``.tflite`` and
running any (:mod:`.litert`); ExecuTorch for phones (:mod:`.executorch`); the
PyTorch-native compiled path (:mod:`.compiled`) and AOTInductor package (:mod:`.pt2`).

May import: ``config``, ``model``, ``fold``, ``data``, ``weights``, ``files``, ``untrusted``, ``optional``.
"""
