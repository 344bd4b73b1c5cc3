"""MobileNet V1 (Howard et al., 2017): the paper's model, its exact cost, Google's weights."""

from .cost import ModelCost, model_cost
from .model import MobileNetV1, MobileNetV1Config, mobilenet_v1

__all__ = ["MobileNetV1", "MobileNetV1Config", "ModelCost", "mobilenet_v1", "model_cost"]
__version__ = "0.1.0"
