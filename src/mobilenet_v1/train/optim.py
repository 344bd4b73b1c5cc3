"""Optimizers and learning-rate schedules of the two training recipes.

``paper``: the paper trains "in TensorFlow using RMSprop with asynchronous gradient
descent similar to Inception V3" with "very little or no weight decay on the depthwise
filters" (Section 3.2). TF-slim's Inception/MobileNet setup is RMSProp(decay 0.9,
momentum 0.9, epsilon 1.0), L2 weight decay 4e-5 and an exponential decay of the
learning rate by 0.94 every 2.5 epochs (``staircase``).

``torch.optim.RMSprop`` differs from TensorFlow's ``RMSPropOptimizer`` in three ways
that matter with epsilon 1.0, so ``RMSpropTF`` implements TF's update:

* eps is added *inside* the square root: ``g / sqrt(ms + eps)`` (torch: ``sqrt(ms) + eps``);
* the mean square ``ms`` starts at 1, not 0 (no huge first steps);
* the learning rate multiplies the step *before* it enters the momentum buffer, so a
  learning-rate change does not rescale the momentum already accumulated.

``modern``: SGD with Nesterov momentum (or AdamW), linear warm-up then cosine decay.

``finetune``: the same optimizer with two learning rates, the classifier's and a much
lower one for the backbone, which stays at 0 during a first linear-probe phase
(:func:`finetune_schedule`).

Quantization-aware epochs (Jacob et al., 2018) come after the float schedule has run its
course: they fine-tune the finished float model with the schedule started again
(:func:`then_qat_phase`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

__all__ = [
    "RMSpropTF",
    "build_optimizer",
    "exponential_decay",
    "finetune_schedule",
    "param_groups",
    "then_qat_phase",
    "warmup_cosine",
]

OPTIMIZERS = ("rmsprop-tf", "sgd", "adamw")


class RMSpropTF(torch.optim.Optimizer):
    """TensorFlow 1.x ``RMSPropOptimizer`` (non-centered), with coupled L2 weight decay.

    ms <- rho * ms + (1 - rho) * g^2;  mom <- momentum * mom + lr * g / sqrt(ms + eps);
    w <- w - mom.  Weight decay adds ``weight_decay * w`` to g, the gradient of
    TF-slim's ``l2_regularizer(weight_decay)`` (``weight_decay * sum(w^2) / 2``).
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter] | Iterable[dict],
        lr: float = 0.045,
        rho: float = 0.9,
        momentum: float = 0.9,
        eps: float = 1.0,
        weight_decay: float = 0.0,
    ) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        defaults = {"lr": lr, "rho": rho, "momentum": momentum, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = torch.enable_grad()(closure)() if closure is not None else None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            ms, mom = [], []
            for p in params:
                state = self.state[p]
                if not state:
                    state["ms"] = torch.ones_like(p, memory_format=torch.preserve_format)
                    state["mom"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                ms.append(state["ms"])
                mom.append(state["mom"])
            rho = group["rho"]
            torch._foreach_mul_(ms, rho)
            torch._foreach_addcmul_(ms, grads, grads, value=1 - rho)
            denom = torch._foreach_sqrt(torch._foreach_add(ms, group["eps"]))
            torch._foreach_mul_(mom, group["momentum"])
            torch._foreach_addcdiv_(mom, grads, denom, value=group["lr"])
            torch._foreach_sub_(params, mom)
        return loss


def _no_decay(param: nn.Parameter, module: nn.Module) -> bool:
    # Section 3.2: "very little or no weight decay on the depthwise filters"; BN and biases
    # are never decayed (TF-slim's regularizer only covers conv/FC weights).
    if param.ndim <= 1:
        return True
    return isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels


def param_groups(model: nn.Module, weight_decay: float, backbone_lr_scale: float = 1.0) -> list[dict]:
    """Trainable parameters in groups by weight decay and by part: the classifier, and the
    backbone (``features``) with ``lr_scale`` = ``backbone_lr_scale``."""
    head = {id(p) for p in model.classifier.parameters()} if hasattr(model, "classifier") else set()
    groups = {
        (backbone, decayed): {"params": [], "weight_decay": weight_decay if decayed else 0.0, "backbone": backbone}
        for backbone in (False, True)  # the classifier's first: its lr is the one logged
        for decayed in (True, False)
    }
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if param.requires_grad:
                groups[id(param) not in head, not _no_decay(param, module)]["params"].append(param)
    for (backbone, _), group in groups.items():
        group["lr_scale"] = backbone_lr_scale if backbone else 1.0
    return list(groups.values())


def build_optimizer(
    name: str, model: nn.Module, lr: float, weight_decay: float, backbone_lr_scale: float = 1.0
) -> torch.optim.Optimizer:
    groups = [g for g in param_groups(model, weight_decay, backbone_lr_scale) if g["params"]]
    if not groups:
        raise ValueError("the model has no trainable parameters")
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
    if name == "rmsprop-tf":
        return RMSpropTF(groups, lr=lr, rho=0.9, momentum=0.9, eps=1.0)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True, foreach=True)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, foreach=True)
    raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")


def exponential_decay(
    optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs_per_decay: float = 2.5, factor: float = 0.94
) -> LambdaLR:
    """TF's ``exponential_decay(staircase=True)``: lr x ``factor`` every ``epochs_per_decay``."""
    decay_steps = max(1, int(steps_per_epoch * epochs_per_decay))
    return LambdaLR(optimizer, lambda step: factor ** (step // decay_steps))


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int) -> LambdaLR:
    """Linear warm-up from lr/warmup_steps to lr, then cosine decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return LambdaLR(optimizer, factor)


def finetune_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, probe_steps: int, warmup_steps: int
) -> LambdaLR:
    """Linear probe, then fine-tuning: the classifier's LR decays by a cosine over the whole
    run; the backbone's is 0 for ``probe_steps``, then warms up linearly over
    ``warmup_steps`` and decays by a cosine to 0 at ``total_steps``."""

    def head(step: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * min(step / max(1, total_steps), 1.0)))

    def backbone(step: int) -> float:
        if step < probe_steps:
            return 0.0
        step -= probe_steps
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - probe_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return LambdaLR(optimizer, [backbone if g["backbone"] else head for g in optimizer.param_groups])


def then_qat_phase(optimizer: torch.optim.Optimizer, schedule: LambdaLR, start_step: int, steps: int) -> LambdaLR:
    """``schedule`` (built for ``start_step`` steps) followed by a QAT phase of ``steps``:
    every group's lr starts again at its own and decays by a cosine to 0. The
    fake-quantized network starts from the float model the schedule finished with; on
    Imagenette (0.25/128 after the 2-epoch fine-tune, one QAT epoch) a restart at 1/100 or
    1/10 of the lr ended 0.6 pt lower, the backbone at the classifier's lr 20 pt lower."""

    def phase(factor: Callable[[int], float]) -> Callable[[int], float]:
        def combined(step: int) -> float:
            if step < start_step:
                return factor(step)
            progress = min((step - start_step) / max(1, steps), 1.0)
            return 0.5 * (1 + math.cos(math.pi * progress))

        return combined

    return LambdaLR(optimizer, [phase(factor) for factor in schedule.lr_lambdas])
