"""Google's checkpoint for one registry record: converted from its ``.tflite`` file(s).

A record with a sha256 for every file (``record.verifiable``) is converted
(:mod:`.google_tflite.convert`) from its sha256-checked ``.tflite`` each time it is loaded; only
the download is cached. A converted ``<cache>/<name>.safetensors`` could only be checked
against a claim inside itself (its ``source_sha256`` metadata), which whoever can write
the cache can also forge, and converting costs little: about 0.1 s for the largest,
1.0/224, in a warm process and 0.3 s in a fresh one (importing ``tflite`` included),
against 0.015 s for reading the converted file (docs/robustness.md).

A record without a recorded sha256 downloads unverified anyway, so for it the converted
file is cached (``<cache>/<name>.safetensors``, with string metadata: resolution,
classes, preprocessing, config, source sha256) and reused; a damaged one is rebuilt. A
file whose sha256 differs from the recorded one is a ``ValueError``.
"""

from __future__ import annotations

from ..model import MobileNetV1
from .download import cache_dir, sha256sum
from .google_tflite.convert import load_tflite
from .io import LoadedWeights, load_safetensors, metadata_strings, save_safetensors
from .records import WeightsRecord, read_labels

__all__ = ["load_record"]


def load_record(
    record: WeightsRecord, *, download: bool = True, progress: bool = False
) -> tuple[MobileNetV1, LoadedWeights]:
    """The eval-mode model and its :class:`LoadedWeights` for ``record`` (a tqdm bar on
    stderr while a download runs, when ``progress``)."""
    cached = None if record.verifiable else cache_dir() / f"{record.name}.safetensors"
    if cached is not None and cached.is_file():
        try:
            model, loaded = load_safetensors(cached)
        except ValueError:
            loaded = None  # a damaged cache entry is rebuilt from the source below
        if loaded is not None:
            return model, LoadedWeights(loaded.classes, loaded.preprocessing, loaded.metadata, record)
    files = record.files(download=download, progress=progress)  # each checked against its sha256 when recorded
    model, _ = load_tflite(files)
    classes = read_labels(download=download, progress=progress)
    meta = {
        "resolution": record.resolution,
        "classes": classes,
        "preprocessing": record.preprocessing.to_dict(),
        "weights": record.name,
        "source_sha256": "+".join(sha256sum(f) for f in files),
    }
    if cached is not None:
        try:
            save_safetensors(model, cached, meta)
        except OSError:
            pass  # a read-only or full cache only costs a re-conversion next time
    return model.eval(), LoadedWeights(classes, record.preprocessing, metadata_strings(meta), record, tuple(files))
