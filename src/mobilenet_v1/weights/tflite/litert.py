"""Google's own interpreter (LiteRT, ``ai-edge-litert``) as a batch -> scores callable.

The reference every fidelity test compares against: it runs a ``.tflite`` file (or an
embedding extractor followed by its head layers, fed the extractor's uint8 output) on
uint8 NCHW batches, one image at a time, and returns the dequantized output scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["LITERT_KERNELS", "LiteRTModel"]

# "default": LiteRT's default CPU path (the XNNPACK delegate); "reference": its
# reference kernels (BUILTIN_REF), the plain C++ arithmetic of the TFLite spec.
LITERT_KERNELS = ("default", "reference")


def _interpreter_module() -> Any:
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        raise ImportError(
            "running Google's interpreter needs 'ai-edge-litert': pip install 'mobilenet-v1[litert]'"
        ) from None
    return interpreter


class LiteRTModel:
    """Run Google's ``.tflite`` model(s) with LiteRT.

    ``model(batch)`` takes a uint8 tensor (N, 3, H, W) and returns float scores (N, C):
    the dequantized output of the last file (softmax probabilities for Google's models).
    ``model.run_uint8(image)`` returns the raw output bytes for one (1, H, W, 3) array.
    """

    def __init__(self, paths: str | Path | Sequence[str | Path], *, kernels: str = "default", threads: int = 1):
        if kernels not in LITERT_KERNELS:
            raise ValueError(f"unknown LiteRT kernels {kernels!r}; choose from {', '.join(LITERT_KERNELS)}")
        module = _interpreter_module()
        resolver = module.OpResolverType.BUILTIN_REF if kernels == "reference" else module.OpResolverType.AUTO
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        self.stages = []
        for path in paths:
            if not Path(path).is_file():
                raise FileNotFoundError(f"TFLite file not found: {path}")
            stage = module.Interpreter(
                model_path=str(path), num_threads=threads, experimental_op_resolver_type=resolver
            )
            stage.allocate_tensors()
            self.stages.append(stage)
        detail = self.stages[0].get_input_details()[0]
        self.input_shape: tuple[int, ...] = tuple(int(s) for s in detail["shape"])
        out = self.stages[-1].get_output_details()[0]
        self.output_scale, self.output_zero_point = out["quantization"]

    def run_uint8(self, image: np.ndarray) -> np.ndarray:
        """Raw output of one (1, H, W, 3) uint8 image, passed through every stage."""
        x = image
        for stage in self.stages:
            stage.set_tensor(stage.get_input_details()[0]["index"], x)
            stage.invoke()
            x = stage.get_tensor(stage.get_output_details()[0]["index"])
        return x

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.dtype != torch.uint8 or tuple(batch.shape[1:]) != self.input_shape[3:] + self.input_shape[1:3]:
            got = f"{batch.dtype} {tuple(batch.shape)}"
            raise ValueError(f"expected a uint8 batch (N, 3, H, W) for LiteRT input {self.input_shape}, got {got}")
        nhwc = batch.permute(0, 2, 3, 1).contiguous().numpy()
        raw = np.concatenate([self.run_uint8(nhwc[i : i + 1]) for i in range(len(nhwc))])
        scores = raw.astype(np.float32)
        if self.output_scale:
            scores = (scores - self.output_zero_point) * self.output_scale
        return torch.from_numpy(scores.reshape(len(nhwc), -1))
