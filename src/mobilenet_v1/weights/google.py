"""Google's checkpoint for one registry record: the converted cache, else its ``.tflite``.

Lookup: ``<cache>/<name>.safetensors`` (used when its recorded source sha256 matches the
record's), else Google's ``.tflite`` file(s) from the cache, the data directory or a
sha256-checked download, converted once (:mod:`.tflite.convert`) and cached as
``.safetensors`` with string metadata (resolution, classes, preprocessing, config, source
sha256). A file whose sha256 differs from the recorded one is a ``ValueError``.
"""

from __future__ import annotations

from ..model import MobileNetV1
from .download import cache_dir, sha256sum
from .io import LoadedWeights, load_safetensors, metadata_strings, save_safetensors
from .records import WeightsRecord, read_labels
from .tflite.convert import load_tflite

__all__ = ["load_record"]


def load_record(
    record: WeightsRecord, *, download: bool = True, progress: bool = False
) -> tuple[MobileNetV1, LoadedWeights]:
    """The eval-mode model and its :class:`LoadedWeights` for ``record`` (a tqdm bar on
    stderr while a download runs, when ``progress``)."""
    cached = cache_dir() / f"{record.name}.safetensors"
    if cached.is_file():
        try:
            model, loaded = load_safetensors(cached)
        except ValueError:
            loaded = None  # a damaged cache entry is rebuilt from the source below
        if loaded and (not record.verifiable or loaded.metadata.get("source_sha256") == record.source_sha256):
            return model, LoadedWeights(loaded.classes, loaded.preprocessing, loaded.metadata, record)
    files = record.files(download=download, progress=progress)
    model, _ = load_tflite(files)
    classes = read_labels(download=download, progress=progress)
    meta = {
        "resolution": record.resolution,
        "classes": classes,
        "preprocessing": record.preprocessing.to_dict(),
        "weights": record.name,
        "source_sha256": "+".join(sha256sum(f) for f in files),
    }
    try:
        save_safetensors(model, cached, meta)
    except OSError:
        pass  # a read-only cache only costs a re-conversion next time
    return model.eval(), LoadedWeights(classes, record.preprocessing, metadata_strings(meta), record, tuple(files))
