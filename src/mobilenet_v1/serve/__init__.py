"""Serving one model over HTTP: ``mobilenet-v1 serve``.

:func:`~.app.create_app` puts a :class:`~mobilenet_v1.classify.Classifier` behind the Open
Inference Protocol (the "v2" REST protocol of Triton and KServe, :mod:`.protocol`), a
``/v1/classify`` endpoint for photos, Prometheus metrics (:mod:`.metrics`) and a web page
that runs the model on the server or in the browser (onnxruntime-web). Concurrent
requests are grouped into batches (:mod:`.batcher`). FastAPI, uvicorn and
prometheus-client come with the ``serve`` extra.

May import: ``classify``, ``data``, ``deploy``, ``weights``, ``files``, ``untrusted``, ``optional``.
"""
