"""torch.hub entry points: ``torch.hub.load("<owner>/mobilenet-v1", "mobilenet_v1", weights=...)``,
or from a checkout, ``torch.hub.load(path, "mobilenet_v1", source="local", ...)``.

Each entry point is the package's own builder, with the same keyword arguments:
:func:`mobilenet_v1.mobilenet_v1` (Table 1 for any alpha, or Google's weights by name,
``MobileNetV1Weights`` member or file) and :func:`mobilenet_v1.detection.mobilenet_v1_backbone`
(the network as a torchvision detection backbone, Section 4.6).
"""

import sys
from pathlib import Path

dependencies = ["torch", "torchvision", "safetensors", "numpy", "PIL", "simplejpeg", "tqdm"]

# The package lives in src/ (torch.hub puts only the repository's root on sys.path).
sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from mobilenet_v1 import mobilenet_v1  # noqa: E402
from mobilenet_v1.detection import mobilenet_v1_backbone  # noqa: E402

__all__ = ["mobilenet_v1", "mobilenet_v1_backbone"]
