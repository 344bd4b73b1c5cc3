"""``mobilenet-v1 train``: train or fine-tune on an image folder, resumable (``--resume``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import VARIANTS
from ..train import distributed as dist
from ..train.checkpoint import LAST
from ..train.config import (
    DISTILL_TEMPERATURE,
    DISTILL_WEIGHT,
    FINETUNE_MIN_PER_CLASS,
    RECIPES,
    SCRATCH_ALPHA,
    SCRATCH_RESOLUTION,
    TEACHER_VIEWS,
    TrainConfig,
    check_device,
    default,
)
from ..train.optim import OPTIMIZERS
from ..weights import FINETUNE_WEIGHTS
from . import args as types

if TYPE_CHECKING:
    from ..train.setup import RunPlan


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train or fine-tune on an image folder (DIR/train + DIR/val, or one folder split by seed)",
    )
    p.add_argument("--data", help="image folder: DIR/<class>/*.jpg, or DIR/train and DIR/val")
    p.add_argument("--output", help="new run folder (must not exist or be empty, nor be inside --data)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument(
        "--weights",
        help="start from these weights: Google's name, .tflite or .safetensors "
        f"(default {FINETUNE_WEIGHTS.value.name}, unless --scratch, --alpha or --variant)",
    )
    p.add_argument("--scratch", action="store_true", default=None, help="train from scratch (random weights)")
    p.add_argument("--alpha", type=types.alpha, help=f"width multiplier from scratch (default {SCRATCH_ALPHA})")
    p.add_argument(
        "--variant",
        choices=VARIANTS,
        help="from scratch: the paper's ablations full-conv (Table 4) or shallow (Table 5) (default standard)",
    )
    p.add_argument(
        "--resolution", type=types.resolution, help=f"input size (default: the weights', else {SCRATCH_RESOLUTION})"
    )
    p.add_argument(
        "--recipe",
        choices=tuple(RECIPES),
        help="paper: RMSprop (TF) + exp. decay; modern: SGD + cosine; finetune: linear probe, then the whole "
        "network with a 0.03x backbone lr; distill: 24 epochs, linear probe, then the whole network with a 0.5x "
        "backbone lr and batch norm unfolded; distill-scratch: paper with a cosine decay to 0 (default: distill "
        "with pretrained weights and --teacher, finetune with pretrained weights, distill-scratch from scratch "
        "with --teacher, else paper)",
    )
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="override the recipe's optimizer")
    p.add_argument(
        "--epochs",
        type=types.positive_int,
        help=f"default: the recipe's ({RECIPES['finetune'].epochs}; distill {RECIPES['distill'].epochs})",
    )
    p.add_argument("--batch-size", type=types.positive_int, help=f"per process (default {default('batch_size')})")
    p.add_argument("--lr", type=types.positive_float, help="default: the recipe's, scaled to the batch size")
    p.add_argument(
        "--weight-decay",
        type=float,
        help=f"L2 on conv/FC weights, not depthwise/BN/bias ({default('weight_decay')})",
    )
    p.add_argument("--label-smoothing", type=float, help="in [0, 1) (default: the recipe's)")
    p.add_argument(
        "--warmup-epochs", type=float, help=f"modern recipe: linear warm-up length ({default('warmup_epochs')})"
    )
    p.add_argument("--freeze-backbone", action="store_true", default=None, help="train the classifier only")
    p.add_argument(
        "--train-backbone",
        action="store_true",
        default=None,
        help=f"fine-tuning: train the whole network even with fewer than {FINETUNE_MIN_PER_CLASS} photos per class "
        "(by default the classifier alone there)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        help=f"share of each class held out when there is no DIR/val ({default('val_fraction')})",
    )
    p.add_argument("--seed", type=int, help=f"seed of init, data order, augmentation and split ({default('seed')})")
    p.add_argument("--workers", type=types.non_negative_int, help=f"data loading processes ({default('workers')})")
    p.add_argument(
        "--worker-idle",
        action=argparse.BooleanOptionalAction,
        help="run the workers only on cores the step leaves idle (Linux SCHED_IDLE; default on)",
    )
    p.add_argument(
        "--worker-nice",
        type=types.non_negative_int,
        help=f"with --no-worker-idle: lower their priority ({default('worker_nice')})",
    )
    p.add_argument("--ema", action="store_true", default=None, help="keep an EMA of the weights; evaluate/save it")
    p.add_argument("--ema-decay", type=float, help=f"default {default('ema_decay')}")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--amp", action="store_const", const="amp", dest="precision", help="fp16 AMP (CUDA)")
    precision.add_argument("--bf16", action="store_const", const="bf16", dest="precision", help="bf16 autocast")
    p.add_argument("--channels-last", action="store_true", default=None)
    p.add_argument(
        "--checkpoint-minutes",
        type=types.positive_float,
        help=f"also checkpoint this often ({default('checkpoint_minutes')})",
    )
    p.add_argument("--checkpoint-steps", type=types.non_negative_int, help="also checkpoint every N steps (0: off)")
    p.add_argument("--sync-bn", action="store_true", default=None, help="batch norm over the global batch (DDP)")
    p.add_argument("--teacher", help="distil from these weights (any --weights spec; Section 4.5)")
    p.add_argument(
        "--distill-temperature",
        type=float,
        help=f"softening of the teacher's and student's outputs, > 0 (default {DISTILL_TEMPERATURE:g})",
    )
    p.add_argument(
        "--distill-weight",
        type=float,
        help=f"share of the loss from the teacher, in [0, 1]; the rest from the labels (default {DISTILL_WEIGHT:g})",
    )
    p.add_argument(
        "--teacher-labels",
        choices=("stored", "live"),
        help="with --teacher: its outputs stored once for --teacher-views seeded views of each photo and replayed "
        "(default, cached for later runs), or computed on every batch",
    )
    p.add_argument(
        "--teacher-views",
        type=types.positive_int,
        help=f"with stored soft labels: views of each photo the teacher labels once; epoch e replays view e mod N "
        f"(default {TEACHER_VIEWS}; more views, more distinct crops over a long run, one teacher pass each)",
    )
    p.add_argument(
        "--unlabeled",
        help="with --teacher: a folder of photos without labels (any tree of images); the student also learns "
        "the teacher's soft labels on them",
    )
    p.add_argument(
        "--qat-epochs",
        type=types.non_negative_int,
        help="train the last N epochs with int8 arithmetic in the loop (quantization-aware): the saved weights "
        "carry their int8 grids, which every int8 export keeps (default 0)",
    )
    p.add_argument("--device", help=f"auto, cpu, cuda, cuda:1 ... (default {default('device')})")
    p.set_defaults(func=run)


def _settings(args: argparse.Namespace) -> dict[str, object]:
    names = (
        "weights scratch alpha variant resolution recipe optimizer epochs batch_size lr weight_decay label_smoothing "
        "warmup_epochs freeze_backbone train_backbone val_fraction seed workers worker_nice worker_idle ema ema_decay "
        "precision channels_last checkpoint_minutes checkpoint_steps sync_bn device teacher distill_temperature "
        "distill_weight qat_epochs unlabeled teacher_labels teacher_views"
    ).split()
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _elastic_resume(args: argparse.Namespace, env: dist.DistEnv) -> None:
    """After torchrun restarted the group (``--max-restarts``), continue the run the failed
    attempt started: from its last checkpoint, or from the start if it had none yet."""
    restarted = dist.restarted_by_torchrun(env)
    run = Path(args.output) if args.output else None
    if restarted and not args.resume and run and ((run / LAST).is_file() or (run / "config.json").is_file()):
        args.resume = args.output


def run(args: argparse.Namespace) -> int:
    from ..train.trainer import train

    # Join the process group first, so a rank that cannot read its data stops every rank.
    env = dist.init_distributed(check_device(args.device or "auto"))
    try:
        _elastic_resume(args, env)
        with dist.fail_together(env, "prepare the run"):
            plan = _plan(args)
        summary = train(plan)
    finally:
        dist.cleanup(env)
    if env.is_main:
        print(json.dumps({k: v for k, v in summary.items() if k != "classes"}, indent=2))
    return 0


def _plan(args: argparse.Namespace) -> RunPlan:
    from ..train.setup import prepare_run

    settings = _settings(args)
    if args.resume:
        if args.output and args.output != args.resume:
            raise ValueError(f"--output {args.output} differs from --resume {args.resume}; give only --resume")
        if args.data:
            settings["data"] = args.data
        return prepare_run(None, resume=args.resume, **settings)
    if not args.data or not args.output:
        raise ValueError("train needs --data DIR and --output RUN_DIR (or --resume RUN_DIR)")
    return prepare_run(TrainConfig(data=args.data, output=args.output, **settings))
