"""Google's ``.tflite`` files: the flatbuffer reader (:mod:`.reader`), the explicit import
into our model (:mod:`.convert`), the integer-exact emulation of TFLite's uint8 kernels
(:mod:`.int8`, :mod:`.fixed_point`) and Google's own interpreter, LiteRT, as the
reference they are checked against (:mod:`.litert`).

May import: ``config``, ``model``, ``data.transforms``, ``untrusted``, ``optional``.
"""
