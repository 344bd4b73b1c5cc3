"""Reading Google's ``.tflite`` files: the flatbuffer reader (:mod:`.reader`), the explicit
import into our model (:mod:`.convert`) and the integer-exact emulation of TFLite's uint8
kernels (:mod:`.int8`, :mod:`.fixed_point`). Google's interpreter, the reference they are
checked against, runs through ``deploy.litert`` (which also writes our own files).

May import: ``config``, ``model``, ``data.transforms``, ``untrusted``, ``optional``.
"""
