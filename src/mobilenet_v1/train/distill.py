"""Knowledge distillation: a large network's softened outputs as training targets.

Section 4.5 trains a small MobileNet "to emulate the outputs of a larger model" instead of
the ground-truth labels alone (distillation, Hinton et al. 2015). Here the teacher is any
weights ``--weights`` accepts; it runs in inference mode on the student's own crops and
flips, each rendered at the teacher's resolution (a student crop upsampled for a larger
teacher would cost the teacher accuracy), either live on every batch or once per stored
view (:mod:`.soft_labels`). The loss mixes the hard labels with the teacher's
distribution softened by a temperature (:func:`distillation_loss`).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from ..data.folders import UNLABELED
from ..data.transforms import float_input
from ..untrusted import printable
from ..weights import load_weights
from .config import TrainConfig
from .setup import head_names

__all__ = ["Teacher", "distillation_loss", "teacher_rows"]


def teacher_rows(spec: str, teacher_classes: list[str], classes: list[str]) -> list[int]:
    """For each of the data's ``classes``, the teacher's output row of the same class
    (Google's 1001 ImageNet outputs are matched by WordNet id, as folders like Imagenette's
    are named); a ``ValueError`` if one has no row."""
    index = {name: row for row, name in enumerate(head_names(teacher_classes))}
    missing = [name for name in classes if name not in index]
    if missing:
        raise ValueError(
            f"teacher {printable(spec)}: class {printable(missing[0])!r} of the data is not among its "
            f"{len(teacher_classes)} classes (a teacher needs the data's classes, or WordNet-id folders for an "
            "ImageNet teacher)"
        )
    return [index[name] for name in classes]


def _fast_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 where the device computes it natively (CUDA, CPUs with AVX-512 BF16/AMX):
    the teacher's forward pass is about 1.2-1.6x faster there; float32 elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Teacher:
    """The teacher of a run: its logits for a student's uint8 batch, over the data's classes."""

    def __init__(self, config: TrainConfig, classes: list[str], device: torch.device) -> None:
        assert config.teacher is not None
        model, loaded = load_weights(config.teacher)
        self.spec = config.teacher
        self.temperature, self.weight = config.distill_temperature, config.distill_weight
        self.views = config.teacher_views if config.teacher_labels == "stored" else 0
        self.rows = torch.tensor(teacher_rows(config.teacher, loaded.classes, classes), device=device)
        self.preprocessing = loaded.preprocessing
        memory_format = torch.channels_last if device.type == "cpu" else torch.contiguous_format
        self.model = model.eval().requires_grad_(False).to(device, memory_format=memory_format)
        self.device = device

    def describe(self) -> str:
        """One line for the start of the run: the teacher, the loss and where its outputs come from."""
        outputs = "live on every batch"
        if self.views:
            outputs = f"stored once for {self.views} views of each photo and replayed"
        return (
            f"distilling from {printable(self.spec)} (it sees each of the student's crops at its own "
            f"{self.preprocessing.resolution} px): loss {self.weight:g} x teacher (temperature {self.temperature:g}) "
            f"+ {1 - self.weight:g} x labels; its outputs {outputs}"
        )

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Float32 logits (N, classes) for a uint8 batch (N, 3, H, W) of views at its resolution."""
        x = float_input(images, self.preprocessing)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with _fast_autocast(self.device):
            logits = self.model(x)
        return logits.float().index_select(1, self.rows)


def distillation_loss(
    logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    weight: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """``weight`` x the KL divergence from the teacher's to the student's distribution, both
    softened by ``temperature`` (scaled by its square so that the gradients keep their size,
    as Hinton et al. do), plus ``1 - weight`` x the cross-entropy with the labels, over the
    photos that have one (``UNLABELED`` photos learn from the teacher alone)."""
    log_student = F.log_softmax(logits.float() / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    soft = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * temperature**2
    labelled = labels != UNLABELED
    if not bool(labelled.any()):
        return weight * soft + 0 * logits.sum()  # every parameter still in the graph (DDP)
    hard = F.cross_entropy(logits[labelled], labels[labelled], label_smoothing=label_smoothing)
    return weight * soft + (1 - weight) * hard
