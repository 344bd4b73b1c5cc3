"""The settings of a training run, the two recipes, and their validation.

Everything is checked here, before a run writes anything: a bad value is one
``ValueError`` naming it (the CLI turns it into one line, exit code 2).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from ..files import write_text
from ..model import validate_alpha, validate_input_size
from .optim import OPTIMIZERS

__all__ = ["PRECISIONS", "RECIPES", "SCRATCH_ALPHA", "SCRATCH_RESOLUTION", "Recipe", "TrainConfig", "default"]

PRECISIONS = ("fp32", "bf16", "amp")


@dataclass(frozen=True)
class Recipe:
    """Defaults of a recipe; ``lr`` is for a batch of ``reference_batch`` (linear scaling)."""

    optimizer: str
    lr: float
    reference_batch: int
    schedule: str  # "exponential" (x0.94 every 2.5 epochs) or "cosine" (with warm-up)
    label_smoothing: float
    min_scale: float
    strong_augment: bool


RECIPES: dict[str, Recipe] = {
    # Section 3.2: RMSprop as for Inception V3, little augmentation, little weight decay.
    # TF-slim applies lr 0.045 to each worker's batch of 32 (asynchronous updates).
    "paper": Recipe("rmsprop-tf", 0.045, 32, "exponential", 0.0, 0.35, False),
    # Today's usual recipe for small CNNs (torchvision/timm references).
    "modern": Recipe("sgd", 0.1, 256, "cosine", 0.1, 0.08, True),
}
# Fine-tuning pretrained weights starts ten times lower than training from scratch.
FINETUNE_LR_FACTOR = 0.1
# From scratch, without --alpha/--resolution: the paper's base model (Table 1).
SCRATCH_ALPHA = 1.0
SCRATCH_RESOLUTION = 224


@dataclass(frozen=True)
class TrainConfig:
    """All settings of a run (saved as ``config.json`` in the run folder)."""

    data: str
    output: str
    weights: str | None = None
    alpha: float | None = None  # None: the weights' alpha, else SCRATCH_ALPHA
    resolution: int | None = None  # None: the weights' resolution, else SCRATCH_RESOLUTION
    epochs: int = 10
    batch_size: int = 32
    lr: float | None = None  # None: the recipe's, scaled by batch size (and fine-tuning)
    recipe: str = "paper"
    optimizer: str | None = None  # None: the recipe's
    weight_decay: float = 4e-5
    label_smoothing: float | None = None
    warmup_epochs: float = 1.0
    freeze_backbone: bool = False
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

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; choose from {', '.join(RECIPES)}")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose from {', '.join(PRECISIONS)}")
        if self.alpha is not None:
            validate_alpha(self.alpha)
        if self.resolution is not None:
            validate_input_size(self.resolution)
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("workers", self.workers, 0)
        _check_int("worker_nice", self.worker_nice, 0)
        if self.worker_nice > 19:
            raise ValueError(f"worker_nice must be at most 19 (the lowest priority), got {self.worker_nice!r}")
        _check_int("checkpoint_steps", self.checkpoint_steps, 0)
        if self.lr is not None:
            _check_positive("lr", self.lr)
        _check_positive("checkpoint_minutes", self.checkpoint_minutes)
        for name in ("weight_decay", "warmup_epochs", "label_smoothing"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay!r}")

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
        return lr * FINETUNE_LR_FACTOR if self.weights else lr

    def resolved_label_smoothing(self) -> float:
        return self.recipe_defaults.label_smoothing if self.label_smoothing is None else self.label_smoothing

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: Path) -> None:
        write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path, **overrides: Any) -> TrainConfig:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read run settings {path}: {exc}") from None
        known = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in data.items() if k in known})
        return replace(config, **{k: v for k, v in overrides.items() if v is not None})


def default(name: str) -> Any:
    """The default of the setting ``name`` (what ``--help`` shows)."""
    return next(f.default for f in fields(TrainConfig) if f.name == name)


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
