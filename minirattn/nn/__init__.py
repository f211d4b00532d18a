"""Stateful modules over ``minirattn.functional`` (see module.py for the contract)."""
from .module import Module
from .layers import (Conv2d, Linear, BatchNorm2d, ReLU, Sigmoid, MaxPool2d, GlobalAvgPool2d,
                     UpsampleBilinear, MaskActivation, Sequential)

__all__ = ["Module", "Conv2d", "Linear", "BatchNorm2d", "ReLU", "Sigmoid", "MaxPool2d",
           "GlobalAvgPool2d", "UpsampleBilinear", "MaskActivation", "Sequential"]
