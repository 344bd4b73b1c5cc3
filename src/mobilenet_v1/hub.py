"""The model's own files: ``.safetensors`` written atomically and read as untrusted input,
and the Hugging Face Hub convention built on them.

:func:`save_state` and :func:`load_state` are the format every checkpoint of the project
uses (training, Google's converted weights, ``save_pretrained``): the state dict with
string metadata. :class:`HubMixin` gives :class:`~mobilenet_v1.model.MobileNetV1` the
Hub's ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``: a folder (or a Hub
repository) holding ``config.json`` in timm's layout (``architecture``, ``num_classes``,
``model_args``: the configuration, ``pretrained_cfg``: the preprocessing and class names)
and ``model.safetensors``, whose metadata repeats the configuration, class names and
preprocessing so that the file alone is a checkpoint ``load_weights`` reads. A local
folder needs nothing more; a repository id downloads through ``huggingface_hub`` (the
``hub`` extra).

Imports the configuration, ``files``, ``untrusted`` and ``optional`` of the project: the
model builds on it.

May import: ``config``, ``files``, ``untrusted``, ``optional``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from .config import MobileNetV1Config
from .files import atomic_write, write_text
from .optional import require
from .untrusted import parse_json, printable

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "HubMixin", "checked_config", "load_state", "save_state"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MAX_HEADER_BYTES = 16 << 20  # a 1001-class checkpoint's header (tensor table + metadata) is ~40 KB
MAX_CONFIG_BYTES = 1 << 20  # config.json with 1001 class names is ~40 KB
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
_INT_DTYPES = {"I8", "I16", "I32", "I64", "U8"}
Model = TypeVar("Model", bound=nn.Module)


def metadata_strings(meta: dict[str, Any]) -> dict[str, str]:
    """Metadata as safetensors stores it: strings as they are, anything else as JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


def save_state(model: nn.Module, path: str | Path, metadata: dict[str, Any]) -> Path:
    """``model``'s state dict with ``metadata`` (non-strings as JSON) at ``path``, atomically."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_write(path, make_parents=True) as tmp:
        try:
            save_file(state, str(tmp), metadata=metadata_strings(metadata))
        except SafetensorError as exc:
            # safetensors reports a failed write ("I/O error: No space left on device (os error 28)")
            # as its own exception: an OSError here, which atomic_write names the file by.
            # Anything else (not an I/O error) is a bug and keeps its type.
            code = re.search(r"\(os error (\d+)\)", str(exc))
            if code is not None:
                raise OSError(int(code[1]), os.strerror(int(code[1]))) from exc
            if "I/O error" in str(exc):
                raise OSError(str(exc).strip().splitlines()[0]) from exc
            raise
    return path


def load_state(path: str | Path, build: Callable[[dict[str, str]], Model]) -> tuple[Model, dict[str, str]]:
    """The model ``build(metadata)`` makes, holding the tensors of the ``.safetensors`` file
    at ``path``, and the file's metadata.

    The file is untrusted input, checked before anything large is allocated: the header's
    size; the model built on the meta device (``build`` validates the metadata it reads);
    every tensor's name, shape and dtype compared with it from the header alone; only then
    are the tensors read, and refused if any is NaN or infinite or a batch norm variance
    is negative. Every failure is a one-line ``ValueError`` naming the file
    (``FileNotFoundError`` for a missing one).
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    _check_header_size(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            with torch.device("meta"):
                model = build(meta)
            expected = model.state_dict()
            _check_state(path, expected, {k: _header_entry(f, k) for k in f.keys()})
            state = {}
            for name, want in expected.items():
                state[name] = f.get_tensor(name).to(want.dtype)  # F64 beyond float32's range becomes inf
                _check_values(path, name, state[name])
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path}: not a readable .safetensors file ({printable(exc)})") from None
    model.load_state_dict(state, assign=True)  # the file's tensors become the model's: nothing else allocated
    leftover = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if leftover:  # a tensor the state dict does not hold: build it for real
        model = build(meta)
        model.load_state_dict(state)
    return model, meta


def _check_header_size(path: Path) -> None:
    """Refuse a header longer than :data:`MAX_HEADER_BYTES` before the library reads it."""
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) == 8:
        size = int.from_bytes(head, "little")
        if size > MAX_HEADER_BYTES:
            raise ValueError(
                f"{path}: not a readable .safetensors file (header of {size} bytes, more than {MAX_HEADER_BYTES})"
            )


def _header_entry(f: Any, name: str) -> tuple[tuple[int, ...], str]:
    """A tensor's shape and dtype from the file's header, reading none of its data."""
    piece = f.get_slice(name)
    return tuple(piece.get_shape()), piece.get_dtype()


def _check_values(path: Path, name: str, tensor: torch.Tensor) -> None:
    if tensor.is_floating_point():
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            raise ValueError(f"{path}: tensor {printable(name)!r} holds {bad} NaN or infinite values")
        if name.endswith("running_var") and bool((tensor < 0).any()):
            raise ValueError(f"{path}: tensor {name!r} holds a negative variance ({float(tensor.min()):.3g})")


def _check_state(path: Path, expected: dict[str, torch.Tensor], got: dict[str, tuple[tuple[int, ...], str]]) -> None:
    """Names, shapes and dtypes of the file's tensors (from its header) against the model's."""
    missing = [k for k in expected if k not in got]
    if missing:
        raise ValueError(f"{path}: missing tensor {missing[0]!r} ({len(missing)} missing)")
    unexpected = [k for k in got if k not in expected]
    if unexpected:
        raise ValueError(f"{path}: unexpected tensor {printable(unexpected[0])!r} ({len(unexpected)} unexpected)")
    for name, tensor in expected.items():
        shape, dtype = got[name]
        if shape != tuple(tensor.shape):
            raise ValueError(f"{path}: tensor {name!r} has shape {shape}, the config needs {tuple(tensor.shape)}")
        allowed = _FLOAT_DTYPES if tensor.dtype.is_floating_point else _INT_DTYPES
        if dtype not in allowed:
            kind = "floating-point" if tensor.dtype.is_floating_point else "integer"
            raise ValueError(f"{path}: tensor {name!r} has dtype {printable(dtype)}, expected a {kind} dtype")


def checked_config(data: Any, what: str) -> MobileNetV1Config:
    """``data`` read from a file as a validated configuration, else a one-line ``ValueError``
    that starts with ``what`` (which names the file and the key)."""
    if not isinstance(data, dict):
        raise ValueError(f"{what} (expected a JSON object, got {type(data).__name__})")
    try:
        return MobileNetV1Config(**data)
    except (TypeError, ValueError, OverflowError) as exc:  # unknown keys or bad values
        raise ValueError(f"{what} ({printable(exc)})") from None


class HubMixin:
    """``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` (the Hugging Face Hub
    convention, as ``huggingface_hub.PyTorchModelHubMixin`` and timm name them) for a model
    built from a :class:`~mobilenet_v1.config.MobileNetV1Config` with timm's
    ``pretrained_cfg`` (input size, preprocessing and, when known, ``label_names``): its
    ``config``, ``pretrained_cfg``, ``num_classes`` and ``num_features`` attributes (not
    annotated here: ``torch.jit.script`` would read annotations as attribute types)."""

    def hub_config(self) -> dict[str, Any]:
        """What ``config.json`` holds: timm's layout, ``model_args`` being the configuration."""
        cfg = {k: v for k, v in self.pretrained_cfg.items() if k not in ("url", "file")}
        return {
            "architecture": "mobilenet_v1",
            "num_classes": self.num_classes,  # type: ignore[attr-defined]
            "num_features": self.num_features,
            "model_args": self.config.to_dict(),
            "pretrained_cfg": cfg,
        }

    def save_pretrained(
        self, save_directory: str | Path, *, push_to_hub: bool = False, repo_id: str | None = None, **hub_kwargs: Any
    ) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``save_directory`` (each file
        atomically), and with ``push_to_hub`` upload them to ``repo_id`` (default: the
        folder's name; ``hub_kwargs`` go to :meth:`push_to_hub`). Returns the folder."""
        folder = Path(save_directory)
        config = self.hub_config()
        cfg = config["pretrained_cfg"]
        labels = cfg.get("label_names")
        meta: dict[str, Any] = {
            "alpha": self.config.alpha,
            "num_classes": self.num_classes,
            "config": self.config.to_dict(),
            "resolution": cfg["input_size"][-1],
            "preprocessing": {
                "resolution": cfg["input_size"][-1],
                "crop_fraction": cfg["crop_pct"],
                "interpolation": cfg["interpolation"],
                "mean": list(cfg["mean"]),
                "std": list(cfg["std"]),
            },
        }
        if isinstance(labels, list | tuple) and len(labels) == self.num_classes:
            meta["classes"] = list(labels)
        save_state(self, folder / WEIGHTS_NAME, meta)  # type: ignore[arg-type]
        write_text(folder / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
        if push_to_hub:
            self.push_to_hub(repo_id or folder.name, folder=folder, **hub_kwargs)
        return folder

    @classmethod
    def from_pretrained(
        cls: type[Model],
        pretrained_model_name_or_path: str | Path,
        *,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
    ) -> Model:
        """The eval-mode model saved by :meth:`save_pretrained` in a local folder, or in a Hub
        repository (``user/name``, downloaded through ``huggingface_hub``). Both files are
        untrusted input: ``config.json`` is parsed with bounded size and depth and its
        configuration validated, ``model.safetensors`` read by :func:`load_state`."""
        source = Path(pretrained_model_name_or_path)
        if source.is_dir():
            config_path, weights_path = source / CONFIG_NAME, source / WEIGHTS_NAME
            for path in (config_path, weights_path):
                if not path.is_file():
                    raise FileNotFoundError(f"{source} is not a saved model: {path.name} not found")
        else:
            hub = require("huggingface_hub", "hub", "downloading from the Hugging Face Hub")
            options = {"revision": revision, "cache_dir": cache_dir, "force_download": force_download}
            options |= {"local_files_only": local_files_only, "token": token}
            repo = str(pretrained_model_name_or_path)
            config_path = Path(hub.hf_hub_download(repo, CONFIG_NAME, **options))
            weights_path = Path(hub.hf_hub_download(repo, WEIGHTS_NAME, **options))
        if config_path.stat().st_size > MAX_CONFIG_BYTES:
            raise ValueError(f"{config_path}: {config_path.stat().st_size} bytes, more than a config.json can be")
        data = parse_json(config_path.read_bytes(), what=str(config_path), max_bytes=MAX_CONFIG_BYTES, max_depth=4)
        args = data.get("model_args") if isinstance(data, dict) else None
        config = checked_config(args, f"{config_path}: bad 'model_args'")
        model, _ = load_state(weights_path, lambda meta: cls(config))  # type: ignore[call-arg]
        cfg = data.get("pretrained_cfg")
        if isinstance(cfg, dict):
            model.pretrained_cfg = {**model.pretrained_cfg, **_checked_cfg(config_path, cfg, config.num_classes)}
        return model.eval()

    def push_to_hub(
        self,
        repo_id: str,
        *,
        folder: Path | None = None,
        commit_message: str = "Upload MobileNet V1",
        private: bool | None = None,
        token: str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
    ) -> str:
        """Upload ``config.json`` and ``model.safetensors`` (written by
        :meth:`save_pretrained` into ``folder``, else into a temporary one) to the Hub
        repository ``repo_id``, creating it if needed; returns the commit's URL."""
        import tempfile

        hub = require("huggingface_hub", "hub", "uploading to the Hugging Face Hub")
        api = hub.HfApi(token=token)
        repo = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as tmp:
            source = folder if folder is not None else self.save_pretrained(tmp)
            commit = api.upload_folder(
                repo_id=repo,
                folder_path=str(source),
                allow_patterns=[CONFIG_NAME, WEIGHTS_NAME],
                commit_message=commit_message,
                revision=revision,
                create_pr=create_pr,
            )
        return str(getattr(commit, "commit_url", commit))


def _checked_cfg(where: Path, cfg: dict[str, Any], num_classes: int) -> dict[str, Any]:
    """The preprocessing fields of a ``pretrained_cfg`` from a file, if they are sound; class
    names only if as many strings as the classes (made printable)."""
    out: dict[str, Any] = {}
    size = cfg.get("input_size")
    if isinstance(size, list) and len(size) == 3 and all(isinstance(s, int) and 0 < s <= 8192 for s in size):
        out["input_size"] = tuple(size)
    for key in ("crop_pct",):
        if isinstance(cfg.get(key), int | float) and 0 < cfg[key] <= 1:
            out[key] = float(cfg[key])
    if cfg.get("interpolation") in ("bilinear", "bicubic", "nearest"):
        out["interpolation"] = cfg["interpolation"]
    for key in ("mean", "std"):
        value = cfg.get(key)
        if isinstance(value, list) and len(value) == 3 and all(isinstance(v, int | float) for v in value):
            out[key] = tuple(float(v) for v in value)
    labels = cfg.get("label_names")
    if isinstance(labels, list) and len(labels) == num_classes and all(isinstance(c, str) for c in labels):
        out["label_names"] = list(labels)  # printed through printable() where they are shown
    elif labels is not None:
        raise ValueError(f"{where}: 'label_names' must be {num_classes} strings")
    return out
