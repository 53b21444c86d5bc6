"""resnets: config-driven training and evaluation of the ResNet family."""

__version__ = "0.1.0"
