"""Deployment: batch norm folded (:mod:`.fold`), ONNX export and the one ONNX Runtime
wrapper (:mod:`.onnx`), int8 (:mod:`.quantize`: the one ``export_int8``, with
quantization-aware fine-tuning from :mod:`.qat`), and the PyTorch-native compiled path
(:mod:`.compiled`).

May import: the model, ``data``, ``weights``, ``files`` and ``untrusted``; nothing of ``train``,
``measure`` or ``cli``.
"""
