"""Images and image folders: decoding and listing (:mod:`.images`), the preprocessing
presets and augmentation (:mod:`.transforms`), class folders and the one dataset
(:mod:`.folders`).

May import: ``untrusted``.
"""
