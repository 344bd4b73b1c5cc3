"""Measuring models: accuracy on image folders (:mod:`.evaluate`), latency of every
runtime (:mod:`.bench`; the subjects and their files in :mod:`.subjects`), the
accuracy/latency trade-off of alpha and rho (:mod:`.tradeoff`, :mod:`.report`), fidelity
to Google's interpreter (:mod:`.fidelity`) and figures (:mod:`.plots`).

May import: ``config``, ``model``, ``cost``, ``classify``, ``data``, ``weights``, ``deploy``, ``files``,
``untrusted``, ``optional``.
"""
