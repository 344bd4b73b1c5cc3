"""The settings of a training run, the two recipes, and their validation.

Everything is checked here, before a run writes anything: a bad value, or a value of
the wrong type (from the Python API or a hand-edited ``config.json``), is one
``ValueError`` naming it (the CLI turns it into one line, exit code 2). Numbers are
stored as plain ``int``/``float`` and paths as ``str``, so the settings always save as
JSON. :data:`FIXED_AT_START` lists the settings a resumed run may not change, and
:func:`check_device` the device a run may use on this machine.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from ..config import VARIANTS, validate_alpha, validate_input_size
from ..files import write_text
from ..weights import FINETUNE_WEIGHTS
from .optim import OPTIMIZERS

__all__ = [
    "DEVICE_TYPES",
    "DISTILL_TEMPERATURE",
    "DISTILL_WEIGHT",
    "FIXED_AT_START",
    "MAX_SEED",
    "PRECISIONS",
    "RECIPES",
    "SCRATCH_ALPHA",
    "SCRATCH_RESOLUTION",
    "TEACHER_LABELS",
    "TEACHER_VIEWS",
    "Recipe",
    "TrainConfig",
    "changed_fixed_settings",
    "check_device",
    "default",
]

PRECISIONS = ("fp32", "bf16", "amp")


@dataclass(frozen=True)
class Recipe:
    """Defaults of a recipe; ``lr`` is for a batch of ``reference_batch`` (linear scaling).

    A fine-tuning recipe first trains only the classifier for the share ``probe`` of the
    steps (a linear probe on the pretrained features), then the whole network with the
    backbone's learning rate ``backbone_lr_scale`` times the classifier's. ``batch_norm``
    says what batch norm does while the backbone trains: normalise by the batch's
    statistics (``"batch"``, Section 3.2), keep the pretrained statistics (``"frozen"``), or
    come back into weights that have it folded into their convolutions, as Google's do,
    initialised to the identity, then normalise by the batch (``"unfolded"``,
    :func:`~mobilenet_v1.fold.unfold_bn`). Folded layers otherwise stay folded.
    """

    optimizer: str
    lr: float
    reference_batch: int
    schedule: str  # "exponential" (x0.94 every 2.5 epochs) or "cosine" (with warm-up)
    label_smoothing: float
    min_scale: float
    strong_augment: bool
    probe: float = 0.0
    backbone_lr_scale: float = 1.0
    batch_norm: str = "batch"
    epochs: int = 10


RECIPES: dict[str, Recipe] = {
    # Section 3.2: RMSprop as for Inception V3, little augmentation, little weight decay.
    # TF-slim applies lr 0.045 to each worker's batch of 32 (asynchronous updates).
    "paper": Recipe("rmsprop-tf", 0.045, 32, "exponential", 0.0, 0.35, False),
    # Today's usual recipe for small CNNs (torchvision/timm references).
    "modern": Recipe("sgd", 0.1, 256, "cosine", 0.1, 0.08, True),
    # Pretrained weights (the default): linear probe, then the whole network with a much
    # lower backbone LR; the paper's optimizer at its fine-tuning LR (0.1x) for the classifier.
    # Google's weights have their batch norm folded into the convolutions, so no statistics
    # are left to re-estimate; the paper recipe's LR on them destroys the features. No label
    # smoothing: it pulls a head started from Google's confident ImageNet rows away from them
    # and costs accuracy on every size of data (docs/training.md, "Fine-tuning by default").
    "finetune": Recipe(
        "rmsprop-tf", 0.0045, 32, "cosine", 0.0, 0.25, False, probe=1 / 3, backbone_lr_scale=0.03, batch_norm="frozen"
    ),
    # Pretrained weights with a teacher (the default then): the student learns longer, as a
    # patient teacher rewards (Beyer et al., 2022), with batch norm put back into Google's
    # folded layers, which cap the fine-tuning recipe near 91.6 % on Imagenette at 0.25/128
    # however long it trains; the backbone at half the classifier's rate: at the full rate
    # a student with few labels and many unlabelled photos fell to 25 % when its backbone
    # started (docs/training.md, "Distillation's recipe").
    "distill": Recipe(
        "rmsprop-tf",
        0.0045,
        32,
        "cosine",
        0.0,
        0.25,
        False,
        probe=1 / 3,
        backbone_lr_scale=0.5,
        batch_norm="unfolded",
        epochs=24,
    ),
    # From scratch with a teacher (the default then): the paper recipe with its rate decayed
    # by a cosine to 0 over the run instead of x0.94 every 2.5 epochs, whose rate, still
    # high at the end of a short run, leaves the final model wherever its last steps threw it:
    # the teacher's targets pay once the rate has come down (docs/training.md, "Distillation").
    "distill-scratch": Recipe("rmsprop-tf", 0.045, 32, "cosine", 0.0, 0.35, False),
}
# The recipes that start from pretrained weights, at their own learning rates.
PRETRAINED_RECIPES = ("finetune", "distill")
# Fine-tuning trains the whole network only from this many training photos per class on
# average; below, the classifier alone (a linear probe on the pretrained features): on 4
# Imagenette classes the whole-network phase lost 7.2 pt at 40 photos per class and 0.5 at
# 120, tied at 300 and gained 0.6 at 600 (docs/training.md, "Small data").
FINETUNE_MIN_PER_CLASS = 300
# The paper and modern recipes fine-tune pretrained weights ten times lower than from scratch.
FINETUNE_LR_FACTOR = 0.1
# Knowledge distillation (Section 4.5, Hinton et al. 2015): the softened teacher's share of
# the loss and the softening temperature.
DISTILL_WEIGHT = 0.7
DISTILL_TEMPERATURE = 4.0
# The teacher's outputs: stored once for a few seeded views of each photo and replayed
# (train/soft_labels.py, FKD), or computed on every batch of every epoch.
TEACHER_LABELS = ("stored", "live")
# Stored soft labels: augmented views of each photo the teacher labels; epoch e replays view
# e mod views. More views, more distinct crops over a long run, at one teacher pass each.
TEACHER_VIEWS = 4
MAX_TEACHER_VIEWS = 1000
# From scratch, without --alpha/--resolution: the paper's base model (Table 1).
SCRATCH_ALPHA = 1.0
SCRATCH_RESOLUTION = 224
# Seeds go to torch.Generator.manual_seed as seed + epoch, which must fit in 64 bits.
MAX_SEED = 2**63 - 1
DEVICE_TYPES = ("cpu", "cuda", "mps")

# Settings fixed at the start of a run: a resume that changed one would continue the
# checkpoint's training with another model, another split of the data or another
# optimizer state. Everything else (epochs, lr, workers, device, ...) may change.
FIXED_AT_START: dict[str, str] = {
    "seed": "the split into training and validation images, the data order and the augmentation",
    "val_fraction": "the split into training and validation images",
    "alpha": "the model's width",
    "variant": "the model's layers",
    "resolution": "the input size",
    "weights": "the starting weights",
    "scratch": "the starting weights",
    "dropout": "the model",
    "freeze_backbone": "which parameters train",
    "train_backbone": "which parameters train",
    "ema": "the evaluated and saved model (EMA)",
    "ema_decay": "the evaluated and saved model (EMA)",
    "recipe": "the optimizer and the schedule",
    "teacher": "the distillation targets",
    "unlabeled": "the training photos",
    "teacher_labels": "the distillation targets",
    "teacher_views": "the distillation targets and the crops of each epoch",
    "distill_temperature": "the distillation targets",
    "distill_weight": "the loss",
    "optimizer": "the optimizer state",
    "batch_size": "the steps of an epoch and the schedule",
    "qat_epochs": "the epochs trained with int8 arithmetic in the loop",
}


@dataclass(frozen=True)
class TrainConfig:
    """All settings of a run (saved as ``config.json`` in the run folder)."""

    data: str
    output: str
    weights: str | None = None  # None: FINETUNE_WEIGHTS, unless scratch, alpha or variant say from scratch
    scratch: bool = False
    alpha: float | None = None  # None: the weights' alpha, else SCRATCH_ALPHA
    variant: str = "standard"  # from scratch: "full-conv" (Table 4) or "shallow" (Table 5)
    resolution: int | None = None  # None: the weights' resolution, else SCRATCH_RESOLUTION
    epochs: int | None = None  # None: the recipe's (10; 24 to distil from pretrained weights)
    batch_size: int = 32
    lr: float | None = None  # None: the recipe's, scaled by batch size (and fine-tuning)
    recipe: str | None = None  # None: "distill"/"finetune" with weights, "distill-scratch"/"paper" without
    optimizer: str | None = None  # None: the recipe's
    weight_decay: float = 4e-5
    label_smoothing: float | None = None
    warmup_epochs: float = 1.0
    freeze_backbone: bool = False
    train_backbone: bool = False  # fine-tuning: the whole network even on small data (FINETUNE_MIN_PER_CLASS)
    dropout: float = 0.001
    val_fraction: float = 0.1
    seed: int = 0
    workers: int = 2
    worker_nice: int = 10  # lower the workers' CPU priority by this much (0-19), when not worker_idle
    worker_idle: bool = True  # workers in SCHED_IDLE: they run only on cores the step leaves idle
    ema: bool = False
    ema_decay: float = 0.9998
    precision: str = "fp32"
    channels_last: bool = False
    checkpoint_minutes: float = 10.0
    checkpoint_steps: int = 0  # 0: only at epoch ends and every checkpoint_minutes
    sync_bn: bool = False
    device: str = "auto"
    teacher: str | None = None  # distil from these weights (Section 4.5)
    distill_temperature: float | None = None  # None: DISTILL_TEMPERATURE with a teacher
    distill_weight: float | None = None  # None: DISTILL_WEIGHT with a teacher
    qat_epochs: int = 0  # the last epochs train with fake quantization (train/qat.py)
    unlabeled: str | None = None  # a folder of photos without labels: the teacher's soft labels only
    teacher_labels: str | None = None  # None: "stored" with a teacher (train/soft_labels.py), or "live"
    teacher_views: int | None = None  # None: TEACHER_VIEWS with stored soft labels

    def __post_init__(self) -> None:
        # Every value is checked (and made a plain Python value) before anything is read or
        # written, each group by one named step.
        self._check_paths()
        self._resolve_start()
        if self.recipe is None:
            if self.weights:
                recipe = "distill" if self.teacher is not None else "finetune"
            else:
                recipe = "distill-scratch" if self.teacher is not None else "paper"
            self._set("recipe", recipe)
        self._check_choices()
        self._check_architecture()
        self._check_counts()
        self._check_flags()
        self._check_rates()
        self._set("device", _check_device_name(self.device))
        if self.recipe in PRETRAINED_RECIPES and self.weights is None:
            raise ValueError(
                f"recipe {self.recipe!r} needs pretrained weights; from scratch use recipe 'paper' or 'modern'"
            )
        self._check_distillation()

    def _check_paths(self) -> None:
        for name in ("data", "output"):
            self._set(name, _check_path(name, getattr(self, name)))
        for name in ("weights", "teacher", "unlabeled"):
            if getattr(self, name) is not None:
                self._set(name, _check_path(name, getattr(self, name)))

    def _check_choices(self) -> None:
        for name, choices in (
            ("recipe", RECIPES),
            ("optimizer", OPTIMIZERS),
            ("precision", PRECISIONS),
            ("variant", VARIANTS),
        ):
            value = getattr(self, name)
            if (value is not None or name != "optimizer") and (not isinstance(value, str) or value not in choices):
                raise ValueError(f"unknown {name} {value!r}; choose from {', '.join(choices)}")

    def _check_architecture(self) -> None:
        if self.alpha is not None:
            self._set("alpha", validate_alpha(_plain_number(self.alpha)))
        if self.resolution is not None:
            validate_input_size(self.resolution)
            if isinstance(self.resolution, (tuple, list)):
                raise ValueError(f"resolution must be one integer (a square input), got {self.resolution!r}")

    def _check_counts(self) -> None:
        if self.epochs is None:
            self._set("epochs", self.recipe_defaults.epochs)
        for name, minimum in (("epochs", 1), ("batch_size", 1), ("workers", 0), ("worker_nice", 0)):
            self._set(name, _check_int(name, getattr(self, name), minimum))
        self._set("checkpoint_steps", _check_int("checkpoint_steps", self.checkpoint_steps, 0))
        self._set("qat_epochs", _check_int("qat_epochs", self.qat_epochs, 0))
        if self.qat_epochs > self.epochs:
            raise ValueError(f"qat_epochs={self.qat_epochs} is more than the run's epochs={self.epochs}")
        self._set("seed", _check_int("seed", self.seed, 0))
        if self.seed > MAX_SEED:
            raise ValueError(f"seed must be an integer in [0, 2**63 - 1], got {self.seed!r}")
        if self.worker_nice > 19:
            raise ValueError(f"worker_nice must be at most 19 (the lowest priority), got {self.worker_nice!r}")

    def _check_flags(self) -> None:
        for name in ("freeze_backbone", "train_backbone", "worker_idle", "ema", "channels_last", "sync_bn"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.freeze_backbone and self.train_backbone:
            raise ValueError("freeze_backbone=True and train_backbone=True contradict each other: give one")
        if self.ema and self.qat_epochs:
            raise ValueError(
                f"qat_epochs={self.qat_epochs} with ema=True: the averaged weights would not lie on the int8 grids; "
                "give one"
            )

    def _check_rates(self) -> None:
        if self.lr is not None:
            self._set("lr", _check_positive("lr", self.lr))
        self._set("checkpoint_minutes", _check_positive("checkpoint_minutes", self.checkpoint_minutes))
        for name in ("weight_decay", "warmup_epochs"):
            self._set(name, _check_range(name, getattr(self, name), ">= 0", lambda v: v >= 0))
        if self.label_smoothing is not None:  # torch's cross-entropy takes [0, 1]; 1 would learn nothing
            in_01 = _check_range("label_smoothing", self.label_smoothing, "in [0, 1)", lambda v: 0 <= v < 1)
            self._set("label_smoothing", in_01)
        self._set("dropout", _check_range("dropout", self.dropout, "in [0, 1)", lambda v: 0 <= v < 1))
        self._set("val_fraction", _check_range("val_fraction", self.val_fraction, "in (0, 1)", lambda v: 0 < v < 1))
        self._set("ema_decay", _check_range("ema_decay", self.ema_decay, "in (0, 1)", lambda v: 0 < v < 1))

    def _resolve_start(self) -> None:
        """Pretrained weights by default, so that the plain command fine-tunes a good model;
        from scratch when asked (``scratch``) or when the model is described (``alpha``,
        ``variant``: Google's weights exist for four fixed configurations only)."""
        if not isinstance(self.scratch, bool):
            raise ValueError(f"scratch must be true or false, got {self.scratch!r}")
        if self.scratch and self.weights is not None:
            raise ValueError(f"scratch and weights {self.weights} exclude each other: give one")
        if self.weights is None and not self.scratch and self.alpha is None and self.variant == "standard":
            self._set("weights", FINETUNE_WEIGHTS.value.name)

    def _check_distillation(self) -> None:
        if self.teacher is None:
            names = ("distill_temperature", "distill_weight", "unlabeled", "teacher_labels", "teacher_views")
            given = [n for n in names if getattr(self, n) is not None]
            if given:
                raise ValueError(f"{given[0]} needs a teacher (--teacher WEIGHTS)")
            return
        temperature = DISTILL_TEMPERATURE if self.distill_temperature is None else self.distill_temperature
        weight = DISTILL_WEIGHT if self.distill_weight is None else self.distill_weight
        self._set("distill_temperature", _check_positive("distill_temperature", temperature))
        self._set("distill_weight", _check_range("distill_weight", weight, "in [0, 1]", lambda v: 0 <= v <= 1))
        labels = "stored" if self.teacher_labels is None else self.teacher_labels
        if labels not in TEACHER_LABELS:
            raise ValueError(f"unknown teacher_labels {labels!r}; choose from {', '.join(TEACHER_LABELS)}")
        self._set("teacher_labels", labels)
        if labels == "live":
            if self.teacher_views is not None:
                raise ValueError("teacher_views needs stored soft labels (teacher_labels 'stored')")
            return
        views = TEACHER_VIEWS if self.teacher_views is None else _check_int("teacher_views", self.teacher_views, 1)
        if views > MAX_TEACHER_VIEWS:
            raise ValueError(f"teacher_views must be at most {MAX_TEACHER_VIEWS}, got {views}")
        self._set("teacher_views", views)

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # normalise a frozen field (e.g. a Path to str)

    @property
    def recipe_defaults(self) -> Recipe:
        return RECIPES[self.recipe]

    def resolved_optimizer(self) -> str:
        return self.optimizer or self.recipe_defaults.optimizer

    def resolved_lr(self, global_batch: int) -> float:
        """``--lr`` if given, else the recipe's lr scaled linearly to the global batch."""
        if self.lr is not None:
            return self.lr
        recipe = self.recipe_defaults
        base = 2e-3 if self.resolved_optimizer() == "adamw" else recipe.lr
        lr = base * global_batch / recipe.reference_batch
        return lr * FINETUNE_LR_FACTOR if self.weights and self.recipe not in PRETRAINED_RECIPES else lr

    def resolved_label_smoothing(self) -> float:
        return self.recipe_defaults.label_smoothing if self.label_smoothing is None else self.label_smoothing

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: Path) -> None:
        write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: object, source: str | Path) -> TrainConfig:
        """Settings saved by :meth:`to_dict` (in ``config.json`` or a checkpoint); anything
        malformed is one ``ValueError`` naming ``source``. Unknown keys are ignored."""
        if not isinstance(data, dict):
            raise ValueError(f"bad run settings in {source}: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        missing = [name for name in ("data", "output") if name not in data]
        if missing:
            raise ValueError(f"bad run settings in {source}: no {missing[0]!r}")
        settings = {k: v for k, v in data.items() if k in known}
        if settings.get("teacher") and "teacher_labels" not in settings:
            settings["teacher_labels"] = "live"  # saved before stored soft labels: the run continues as it began
        try:
            return cls(**settings)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"bad run settings in {source}: {exc}") from None

    @classmethod
    def load(cls, path: Path, **overrides: Any) -> TrainConfig:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
            raise ValueError(f"cannot read run settings {path}: {reason}") from None
        config = cls.from_dict(data, path)
        return replace(config, **{k: v for k, v in overrides.items() if v is not None})


def changed_fixed_settings(saved: TrainConfig, overrides: dict[str, Any]) -> list[str]:
    """The settings of :data:`FIXED_AT_START` that ``overrides`` (``None``: not given) would
    change, as ``"seed 0 -> 7 (the split ...)"``; the one place a resume checks them."""
    changed = []
    for name, meaning in FIXED_AT_START.items():
        value = overrides.get(name)
        if value is not None and value != getattr(saved, name):
            changed.append(f"{name} {getattr(saved, name)!r} -> {value!r} ({meaning})")
    return changed


def check_device(name: str) -> torch.device:
    """The device ``name`` ("auto", "cpu", "cuda", "cuda:N", "mps") on this machine, or a
    ``ValueError`` when it is not a device or not available here (checked before a run
    writes anything; "auto" is CUDA when available, else the CPU)."""
    name = _check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: CUDA is not available on this machine (use device='cpu')")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {name!r}: this machine has {count} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r}: MPS is not available on this machine (use device='cpu')")
    return device


def default(name: str) -> Any:
    """The default of the setting ``name`` (what ``--help`` shows)."""
    return next(f.default for f in fields(TrainConfig) if f.name == name)


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _plain_number(value: object) -> object:
    """A NumPy or other real number as a plain ``float`` (bools and non-numbers unchanged)."""
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, int, float)):
        return float(value)
    return value


def _check_range(name: str, value: object, where: str, inside: Any) -> float:
    """``value`` as a float if it is a finite number ``inside`` (described by ``where``)."""
    value = _plain_number(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and inside(value)):
        raise ValueError(f"{name} must be a finite number {where}, got {value!r}")
    return float(value)


def _check_positive(name: str, value: object) -> float:
    value = _plain_number(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_path(name: str, value: object) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value or "\0" in value:
        raise ValueError(f"{name} must be a path or name, got {value!r}")
    return value


def _check_device_name(name: object) -> str:
    """``name`` if it parses as a device of :data:`DEVICE_TYPES` (or is "auto")."""
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        return name
    hint = f"use auto, {', '.join(DEVICE_TYPES)} or cuda:N"
    if not isinstance(name, str):
        raise ValueError(f"device must be a name ({hint}), got {name!r}")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"unknown device {name!r}; {hint}") from None
    if device.type not in DEVICE_TYPES:
        raise ValueError(f"unsupported device {name!r} for training; {hint}")
    return name
