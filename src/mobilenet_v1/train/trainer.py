"""Training and fine-tuning on image folders, with exact resume.

The loop follows torchvision's classification reference: ``train_epoch``, ``evaluate``,
a plain-dict checkpoint, ``model_without_ddp``, ``sampler.set_epoch`` and rank-0-only
logging, so the same command runs under torchrun (see ``distributed.py``).

Exact resume: the checkpoint holds every piece of state the remaining steps depend on
(weights, optimizer, scheduler, EMA, scaler, RNG states, epoch, step in the epoch), and
the data order and augmentation of a sample depend only on ``(seed, epoch, index)``; so
a run killed at any point and resumed from its last checkpoint ends with the same
weights as an uninterrupted run. Ctrl-C (SIGINT) saves a checkpoint after the current
step and stops.

Nothing is written before every check has passed: ``train`` builds the whole trainer
(model, weights, loaders, optimizer, the checkpoint's state) first, then takes the run
folder's lock (:class:`.runlock.RunLock`, rank 0 only under torchrun), then writes
``config.json``; the lock is released however the run ends.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from ..data.folders import UNLABELED, ImageFolder
from ..data.transforms import float_input
from ..files import write_text
from ..fold import unfold_bn
from ..untrusted import printable
from ..weights import load_weights, save_safetensors
from ..weights.grids import Int8Grids, int8_grids
from . import distributed as dist
from . import qat
from .accel import accelerate, kernels_summary
from .checkpoint import (
    BEST,
    LAST,
    Progress,
    atomic_save,
    capture_rng,
    restore_rng,
    test_signal_from_env,
)
from .config import FINETUNE_MIN_PER_CLASS, check_device
from .distill import Teacher, distillation_loss
from .loaders import augmentation, build_loaders, calibration_batch
from .optim import build_optimizer, exponential_decay, finetune_schedule, then_qat_phase, warmup_cosine
from .outputs import TensorBoard, format_row, model_metadata, plot_curves, write_metrics
from .runlock import LOCK, RunLock
from .setup import RunPlan, build_model, teacher_fingerprint
from .soft_labels import SoftLabels, store_key
from .validate import autocast_for, evaluate

__all__ = ["Trainer", "train"]


class Trainer:
    """One run: model, optimizer, schedule, EMA and loaders, built from a checked ``RunPlan``."""

    def __init__(self, plan: RunPlan, env: dist.DistEnv, device: torch.device) -> None:
        self.config, self.split, self.classes, self.run_dir = plan.config, plan.split, plan.split.classes, plan.run_dir
        self.left_out, self.unlabeled = plan.split.left_out, len(plan.split.unlabeled)
        self.env, self.device = env, device
        cfg = self.config
        torch.manual_seed(cfg.seed)
        model, self.preprocessing = build_model(cfg, self.classes)
        # Fine-tuning on few photos per class: the classifier alone (FINETUNE_MIN_PER_CLASS);
        # unlabelled photos count, for the teacher labels them.
        self.photos_per_class = (len(plan.split.train) + self.unlabeled) / len(self.classes)
        self.small_data = (
            cfg.recipe_defaults.probe > 0
            and not (cfg.freeze_backbone or cfg.train_backbone)
            and self.photos_per_class < FINETUNE_MIN_PER_CLASS
        )
        self.classifier_only = cfg.freeze_backbone or self.small_data
        if self.classifier_only:
            model.features.requires_grad_(False)
        # Batch norm back into folded layers whose backbone trains (the QAT phase trains the
        # folded layers themselves): the same model on the training photos at the start.
        self.unfolded = (
            cfg.recipe_defaults.batch_norm == "unfolded"
            and model.config.folded_bn
            and not (self.classifier_only or cfg.qat_epochs)
        )
        if self.unfolded:
            images = calibration_batch(plan.split, self.preprocessing)
            model = unfold_bn(model, float_input(images, self.preprocessing))
        accelerate(model)  # faster CPU kernels, same parameters and state dict
        memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.memory_format = memory_format
        self.model_without_ddp = model.to(device, memory_format=memory_format)
        self.progress = Progress()
        self.teacher = Teacher(cfg, self.classes, device) if cfg.teacher else None
        self.teacher_sha256 = teacher_fingerprint(cfg.teacher) if cfg.teacher else None
        self.soft_labels: SoftLabels | None = None  # the stored teacher outputs, loaded as the run starts
        teacher_resolution = self.teacher.preprocessing.resolution if self.teacher else None
        self.train_loader, self.sampler, self.val_loader = build_loaders(
            cfg, plan.split, self.preprocessing, env, teacher_resolution
        )
        self.steps_per_epoch = len(self.sampler) // cfg.batch_size
        self.lr = cfg.resolved_lr(dist.global_batch_size(cfg.batch_size, env))
        recipe = cfg.recipe_defaults
        self.optimizer = build_optimizer(
            cfg.resolved_optimizer(), self.model_without_ddp, self.lr, cfg.weight_decay, recipe.backbone_lr_scale
        )
        # The float schedule, then the QAT phase (``qat_epochs``) from the model it finished with.
        self.float_epochs = cfg.epochs - cfg.qat_epochs
        self.qat_start = self.float_epochs if cfg.qat_epochs else None
        # The classifier alone for the whole run: no probe phase to end.
        probe = recipe.probe * self.float_epochs * self.steps_per_epoch
        self.probe_steps = 0 if self.classifier_only else round(probe)
        self.model = self._wrap()
        self.scheduler = self._build_scheduler()
        self.ema = self._build_ema()
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "amp" and device.type == "cuda")
        self.autocast = autocast_for(cfg.precision, device)
        self.stop_requested = False
        self.test_signal = test_signal_from_env(env.rank)
        self.last_save = time.monotonic()
        self.tensorboard: TensorBoard | None = None
        if self.qat_start is not None:  # refused now, not after the epochs before the phase
            qat.check_model(model, self.preprocessing)
        if plan.checkpoint is not None:
            kept = plan.checkpoint["model"].get(f"{qat.RANGES}.kept")
            if kept is not None:  # saved during the QAT phase: the same fake quantization first
                qat.instrument(self.model_without_ddp, self.preprocessing, self._start_grids(), kept.tolist())
            self.load_state_dict(plan.checkpoint)

    def _wrap(self) -> torch.nn.Module:
        """The model as the steps call it (DDP under torchrun). During the linear probe the
        backbone takes no gradient, so its backward pass is skipped; DDP is wrapped again
        when it starts to train, to reduce its gradients too."""
        self.probing = self.progress.global_step < self.probe_steps
        if self.probe_steps:
            self.model_without_ddp.features.requires_grad_(not self.probing)
        return dist.wrap_model(self.model_without_ddp, self.env, self.device, sync_bn=self.config.sync_bn)

    def _set_train_modes(self) -> None:
        """Training mode, but the backbone's batch norm keeps its statistics while the
        backbone does not train (the classifier alone, the linear probe) and where the
        recipe keeps the pretrained ones."""
        self.model.train()
        if self.classifier_only or self.probing or self.config.recipe_defaults.batch_norm == "frozen":
            self.model_without_ddp.features.eval()

    def _build_scheduler(self) -> torch.optim.lr_scheduler.LambdaLR:
        schedule = self._float_schedule()
        if self.qat_start is None:
            return schedule
        start = self.qat_start * self.steps_per_epoch
        return then_qat_phase(self.optimizer, schedule, start, self.config.qat_epochs * self.steps_per_epoch)

    def _float_schedule(self) -> torch.optim.lr_scheduler.LambdaLR:
        cfg = self.config
        if cfg.recipe_defaults.schedule == "exponential":
            return exponential_decay(self.optimizer, self.steps_per_epoch)
        total, warmup = self.float_epochs * self.steps_per_epoch, round(cfg.warmup_epochs * self.steps_per_epoch)
        if self.probe_steps:
            # The backbone warms up over at most half of what is left after the probe.
            warmup = min(warmup, (total - self.probe_steps) // 2)
            return finetune_schedule(self.optimizer, total, self.probe_steps, warmup)
        return warmup_cosine(self.optimizer, total, warmup)

    def _build_ema(self) -> AveragedModel | None:
        if not self.config.ema:
            return None
        avg = get_ema_multi_avg_fn(self.config.ema_decay)
        return AveragedModel(self.model_without_ddp, multi_avg_fn=avg, use_buffers=True)

    # -- checkpoints --------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model_without_ddp.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "scaler": self.scaler.state_dict(),
            "rng": capture_rng(),
            "progress": asdict(self.progress),
            "config": self.config.to_dict(),
            "classes": self.classes,
            "preprocessing": self.preprocessing.to_dict(),
            "teacher_sha256": self.teacher_sha256,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint (structure checked by ``check_checkpoint``); state that does
        not fit this run's model, optimizer or schedule is one ``ValueError``."""
        try:
            self.model_without_ddp.load_state_dict(state["model"])
            if self.ema is not None and state["ema"] is not None:
                self.ema.load_state_dict(state["ema"])
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ValueError(f"checkpoint does not match the model of this run: {first}") from None
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if state["scaler"]:  # empty: saved by a disabled scaler (not fp16 AMP on CUDA)
                self.scaler.load_state_dict(state["scaler"])
            restore_rng(state["rng"])
            self.progress = Progress.from_dict(state["progress"])
            self.model = self._wrap()
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ValueError(f"the checkpoint in {self.run_dir} does not fit this run: {first}") from None

    def save_checkpoint(self, *, best: bool = False) -> None:
        if not self.env.is_main:
            return
        state = self.state_dict()
        if best:
            atomic_save(state, self.run_dir / BEST)
        atomic_save(state, self.run_dir / LAST)
        self.last_save = time.monotonic()

    # -- the loop ---------------------------------------------------------------------

    def train_step(self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        if self.probing and self.progress.global_step >= self.probe_steps:
            self.model = self._wrap()  # the probe is over: the backbone trains from here
            self._set_train_modes()
        teacher_images = None
        if isinstance(images, list):  # a live teacher's views at its own resolution (PairedViews)
            images, teacher_images = images
        images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
        targets = None
        if self.soft_labels is not None:
            targets = self.soft_labels.targets(self.progress.epoch, indices, self.device)
        elif self.teacher is not None:
            views = images if teacher_images is None else teacher_images.to(self.device, non_blocking=True)
            targets = self.teacher(views)
        images = float_input(images, self.preprocessing)
        labels = labels.to(self.device, non_blocking=True)
        cfg = self.config
        smoothing = cfg.resolved_label_smoothing()
        with self.autocast():
            logits = self.model(images)
            if targets is None:
                loss = F.cross_entropy(logits, labels, label_smoothing=smoothing)
            else:
                temperature, weight = cfg.distill_temperature, cfg.distill_weight
                loss = distillation_loss(logits, targets, labels, temperature, weight, smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model_without_ddp)
        p, labelled = self.progress, labels != UNLABELED  # accuracy over the photos with labels
        p.loss_sum += loss.item() * int(labelled.sum())
        p.correct += int((logits.argmax(1) == labels).sum())
        p.seen += int(labelled.sum())
        return loss

    def train_epoch(self) -> None:
        p, cfg = self.progress, self.config
        self.sampler.set_epoch(p.epoch, skip=p.step_in_epoch * cfg.batch_size)
        self._set_train_modes()
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=p.step_in_epoch,
            desc=f"epoch {p.epoch + 1}/{cfg.epochs}",
            disable=not self.env.is_main,
            mininterval=1.0,
            dynamic_ncols=True,
        )
        start = last = time.monotonic()
        images_done = 0
        try:
            for images, labels, indices, skipped in self.train_loader:
                p.skipped_images += skipped
                if len(labels):
                    self.train_step(images, labels, indices)
                images_done += len(labels)
                p.step_in_epoch += 1
                p.global_step += 1
                now = time.monotonic()
                p.train_seconds += now - last
                last = now
                bar.set_postfix(self._postfix(images_done / max(now - start, 1e-9)), refresh=False)
                bar.update()
                self.after_step()
                if self.stop_requested:
                    break
        finally:
            bar.close()  # also on an error, whose one line then starts a line of its own

    def _postfix(self, images_per_s: float) -> dict[str, str]:
        p = self.progress
        return {
            "loss": f"{p.loss_sum / max(p.seen, 1):.4f}",
            "acc": f"{100 * p.correct / max(p.seen, 1):.2f}%",
            "lr": f"{self.scheduler.get_last_lr()[0]:.3g}",
            "img/s": f"{images_per_s * self.env.world_size:.1f}",
        }

    def after_step(self) -> None:
        """Periodic checkpoints, the test hook and Ctrl-C, all at a step boundary."""
        cfg, step = self.config, self.progress.global_step
        by_steps = cfg.checkpoint_steps and step % cfg.checkpoint_steps == 0
        by_time = time.monotonic() - self.last_save >= 60 * cfg.checkpoint_minutes
        if (by_steps or by_time) and self.progress.step_in_epoch < self.steps_per_epoch:
            self.save_checkpoint()
        if self.test_signal is not None and step == self.test_signal[1]:
            os.kill(os.getpid(), self.test_signal[0])
            time.sleep(1)  # let the signal arrive before the next step
        if self.stop_requested:
            self.save_checkpoint()

    def evaluate(self) -> tuple[float, float]:
        """Validation loss and top-1 (EMA weights when ``--ema``), summed over processes."""
        model = self.ema.module if self.ema is not None else self.model_without_ddp
        dist.broadcast_buffers(model, self.env)  # BN statistics: evaluate what rank 0 saves
        loss, acc, skipped = evaluate(
            model, self.val_loader, self.device, self.autocast, self.memory_format, self.env, self.preprocessing
        )
        self.progress.skipped_images += skipped
        return loss, acc

    def end_epoch(self) -> None:
        """Validate, record the epoch, save the best model and the checkpoint."""
        p = self.progress
        val_loss, val_acc = self.evaluate()
        # Sums over all ranks (after a mid-epoch resume, rank 0's sums stand in for the
        # other ranks' part before the interruption: the checkpoint holds rank 0's).
        sums = torch.tensor([p.loss_sum, p.correct, p.seen, p.skipped_images], dtype=torch.float64)
        loss_sum, correct, seen, skipped = dist.all_reduce_sum(sums.to(self.device), self.env).tolist()
        row = {
            "epoch": p.epoch + 1,
            "step": p.global_step,
            "train_loss": loss_sum / max(seen, 1),
            "train_acc": correct / max(seen, 1),
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": self.scheduler.get_last_lr()[0],
            "train_seconds": p.train_seconds,
            "skipped_images": int(skipped),
        }
        p.history.append(row)
        p.epoch, p.step_in_epoch, p.loss_sum, p.correct, p.seen = p.epoch + 1, 0, 0.0, 0, 0
        is_best = val_acc > p.best_acc
        p.best_acc = max(p.best_acc, val_acc)
        if is_best and self.env.is_main:
            self.save_model(self.run_dir / "model-best.safetensors")
        self.save_checkpoint(best=is_best)
        if self.env.is_main:
            write_metrics(self.run_dir, p.history)
            assert self.tensorboard is not None
            self.tensorboard.log({f"epoch/{k}": v for k, v in row.items() if k != "epoch"}, row["epoch"])
            print(format_row(row), file=sys.stderr)
        dist.barrier(self.env)

    def save_model(self, path: Path) -> None:
        """The evaluated weights (EMA when enabled) as ``.safetensors`` with the metadata that
        ``predict``, ``eval`` and ``export`` read (:func:`~mobilenet_v1.weights.save_safetensors`)."""
        model = self.ema.module if self.ema is not None else self.model_without_ddp
        metadata = model_metadata(self.config, self.classes, self.preprocessing)
        if qat.is_instrumented(model):  # the weights on their int8 grids, and the grids
            model, grids = qat.finalize(model, self.preprocessing)
            metadata["int8_grids"] = grids.to_json()
        save_safetensors(model, path, metadata)

    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs; returns the run summary."""
        self.tensorboard = TensorBoard(self.run_dir) if self.env.is_main else None
        if self.env.is_main:
            reference = None if self.config.lr is not None else self.config.recipe_defaults.reference_batch
            print(dist.scaling_summary(self.config.batch_size, self.lr, self.env, reference), file=sys.stderr)
            for line in self._plan_lines():
                print(line, file=sys.stderr)
        if self.teacher is not None and self.config.teacher_labels == "stored":
            self.soft_labels = self._stored_soft_labels()
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            while self.progress.epoch < self.config.epochs:
                self._start_qat_phase()
                self.train_epoch()
                if self.stop_requested:
                    print(f"interrupted: checkpoint saved; continue with --resume {self.run_dir}", file=sys.stderr)
                    raise KeyboardInterrupt
                self.end_epoch()
            return self.finish()
        finally:
            signal.signal(signal.SIGINT, previous)
            if self.tensorboard is not None:
                self.tensorboard.close()

    def _start_qat_phase(self) -> None:
        """At the first epoch of the QAT phase: fake quantization into the model (its
        parameters stay the optimizer's), DDP wrapped again around it."""
        start = self.qat_start
        if start is None or self.progress.epoch < start or qat.is_instrumented(self.model_without_ddp):
            return
        images = calibration_batch(self.split, self.preprocessing).to(self.device, memory_format=self.memory_format)
        calibration = float_input(images, self.preprocessing)
        qat.instrument(self.model_without_ddp, self.preprocessing, self._start_grids(), calibration=calibration)
        self.model = self._wrap()
        if self.env.is_main:
            line = f"epoch {start + 1}: quantization-aware training from here (int8 arithmetic in the loop)"
            print(line, file=sys.stderr)

    def _stored_soft_labels(self) -> SoftLabels:
        """The teacher's stored outputs for this run's photos and views (labelled now, or cached)."""
        cfg, recipe = self.config, self.config.recipe_defaults
        # The teacher sees each view at its own resolution: the student's crop, not its pixels.
        resolution = self.teacher.preprocessing.resolution
        views = augmentation(cfg, self.preprocessing, resolution)
        dataset = ImageFolder(self.train_loader.dataset.samples, views, skip_unreadable=True)
        settings = {
            "preprocessing": self.preprocessing.to_dict(),
            "teacher_resolution": resolution,
            "min_scale": recipe.min_scale,
            "strong": recipe.strong_augment,
            "classes": self.classes,
        }
        key = store_key(cfg.teacher, self.teacher_sha256, dataset, cfg.seed, cfg.teacher_views, settings)
        return SoftLabels.load_or_label(
            key,
            self.teacher,
            dataset,
            cfg.seed,
            cfg.teacher_views,
            len(self.classes),
            self.env,
            cfg.batch_size,
            cfg.workers,
        )

    def _start_grids(self) -> Int8Grids | None:
        """The int8 grids of the starting weights (Google's quantized checkpoints), if any."""
        if not self.config.weights:
            return None
        _, loaded = load_weights(self.config.weights, download=False)
        return int8_grids(loaded)

    def _plan_lines(self) -> list[str]:
        """What this run does beyond the plain recipe, said once at its start."""
        lines, cfg = [], self.config
        start = f"starting from {printable(cfg.weights)}" if cfg.weights else "starting from scratch (random weights)"
        start += "" if not cfg.weights else " (--scratch for random weights)"
        lines.append(f"{start}; recipe {cfg.recipe}, {cfg.epochs} epoch{'s' * (cfg.epochs != 1)}")
        if self.small_data:
            lines.append(
                f"fine-tuning: the classifier alone ({self.photos_per_class:.0f} training photos per class, fewer "
                f"than {FINETUNE_MIN_PER_CLASS}: training the whole network on so few lowers accuracy; "
                "--train-backbone trains it anyway)"
            )
        if self.probe_steps:
            scale, steps = cfg.recipe_defaults.backbone_lr_scale, self.probe_steps
            lines.append(
                f"fine-tuning: the classifier alone for the first {steps} step{'s' * (steps != 1)} (linear probe), "
                f"then the whole network, the backbone at {scale:g}x the classifier's lr"
            )
        if self.unfolded:
            lines.append(
                "batch norm: back into the folded layers, each the identity on training photos at the start, "
                "trained with batch statistics while the backbone trains (exports fold it again)"
            )
        if self.teacher is not None:
            lines.append(self.teacher.describe())
        if self.unlabeled:
            labelled = len(self.train_loader.dataset) - self.unlabeled
            lines.append(
                f"training photos: {labelled} labelled and {self.unlabeled} unlabelled (--unlabeled: the teacher's "
                "soft labels only), each epoch all of them"
            )
        if self.qat_start is not None:
            epochs = cfg.qat_epochs
            lines.append(
                f"quantization-aware training: the last {epochs} epoch{'s' * (epochs != 1)} with int8 arithmetic in "
                "the loop; the saved weights carry their int8 grids, which every int8 export keeps"
            )
        if self.device.type == "cpu":
            lines.append(kernels_summary())
        if self.left_out:
            counts = sorted(self.left_out.items(), key=lambda item: -item[1])
            kinds = ", ".join(f"{printable(ext)} ({n})" for ext, n in counts)
            total = sum(self.left_out.values())
            lines.append(f"left out {total} files that are not images this project reads: {kinds}")
        return lines

    def _on_sigint(self, signum: int, frame: object) -> None:
        self.stop_requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once

    def finish(self) -> dict[str, Any]:
        p = self.progress
        summary = {
            "classes": self.classes,
            "epochs": p.epoch,
            "steps": p.global_step,
            "best_val_acc": p.best_acc,
            "final_val_acc": p.history[-1]["val_acc"] if p.history else None,
            "skipped_images": p.history[-1]["skipped_images"] if p.history else p.skipped_images,
            "unlabeled_images": self.unlabeled,
            "train_seconds": p.train_seconds,
        }
        if self.env.is_main:
            self.save_model(self.run_dir / "model-final.safetensors")
            plot_curves(p.history, self.run_dir / "curves.png")
            write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        return summary


def train(plan: RunPlan) -> dict[str, Any]:
    """Run a checked plan (see ``setup.prepare_run``) to the end; returns its summary.

    The trainer is built before anything is written; rank 0 then owns the run folder
    (its lock) until the run ends, however it ends. A new run that fails before its
    ``config.json`` leaves no folder behind."""
    device = check_device(plan.config.device)
    env = dist.init_distributed(device)
    try:
        device = dist.local_device(device, env)
        trainer = Trainer(plan, env, device)
        created = not plan.run_dir.exists()
        lock: RunLock | None = None
        with dist.fail_together(env, "lock the run folder"):
            if env.is_main:
                lock = RunLock.acquire(plan.run_dir)
        try:
            with dist.fail_together(env, "start the run"):
                if env.is_main:
                    _start_run(plan)
            return trainer.fit()
        finally:
            if lock is not None:
                lock.release()
                if created:
                    _remove_if_empty(plan.run_dir)
    finally:
        dist.cleanup(env)


def _start_run(plan: RunPlan) -> None:
    """Write the run's settings and classes; a new run's folder must hold nothing else
    (another run may have started there since ``prepare_run`` looked)."""
    if plan.checkpoint is None and not (plan.run_dir / "config.json").exists():
        others = sorted(p.name for p in plan.run_dir.iterdir() if p.name != LOCK)
        if others:
            raise FileExistsError(f"output folder {plan.run_dir} is not empty any more ({others[0]} appeared)")
    plan.config.save(plan.run_dir / "config.json")
    write_text(plan.run_dir / "classes.json", json.dumps(plan.split.classes, indent=2) + "\n")


def _remove_if_empty(folder: Path) -> None:
    """Remove a run folder this run created if nothing was written to it."""
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty: the run's files stay
