"""MobileNet V1 (Howard et al., 2017): the paper's model, its exact cost, Google's weights.

The public API: the builder :func:`mobilenet_v1`, the model and its configuration, the
cost (:func:`model_cost`), Google's weights (:class:`MobileNetV1Weights`,
:func:`load_weights`) and :class:`Classifier` (model + preprocessing + class names).

Layout, each package's ``__init__`` says what it owns and may import: ``config``, ``model``
and ``cost`` are leaves (torch only); ``data`` (images, presets, folders) and ``weights``
build on them; ``classify``, ``builders`` and ``detection`` on those; ``train``,
``deploy`` and ``measure`` on all of these; ``cli`` on everything.

May import: ``builders``, ``classify``, ``config``, ``cost``, ``model``, ``weights``, ``timm_registry``.
"""

from importlib.util import find_spec

from .builders import mobilenet_v1
from .classify import Classifier
from .config import MobileNetV1Config
from .cost import ModelCost, model_cost
from .model import MobileNetV1
from .weights import MobileNetV1Weights, load_weights

if find_spec("timm") is not None:  # timm.create_model("mobilenet_v1_025_128.google_quant", ...)
    from . import timm_registry  # noqa: F401

__all__ = [
    "Classifier",
    "MobileNetV1",
    "MobileNetV1Config",
    "MobileNetV1Weights",
    "ModelCost",
    "load_weights",
    "mobilenet_v1",
    "model_cost",
]
__version__ = "0.1.0"
