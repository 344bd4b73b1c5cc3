"""Images and image folders: decoding and listing (:mod:`.images`), the preprocessing
presets and augmentation (:mod:`.transforms`), class folders and the one dataset
(:mod:`.folders`).

May import: torch, torchvision, the image libraries and ``untrusted`` (text from files); nothing else of
the project.
"""
