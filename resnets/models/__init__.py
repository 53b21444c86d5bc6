"""The ResNet family: one generic ResNet, the Residual Attention Network, and a registry of names."""

from .attention_net import ResidualAttentionNet
from .errors import ModelError
from .registry import build_model, build_model_from_config, list_models
from .resnet import ResNet

__all__ = [
    "ModelError",
    "ResNet",
    "ResidualAttentionNet",
    "build_model",
    "build_model_from_config",
    "list_models",
]
