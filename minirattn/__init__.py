"""minirattn: the Residual Attention Network (Wang et al., CVPR 2017) in NumPy/CuPy,
every forward and backward written by hand and proven by finite differences."""
from . import backend, functional, nn
from .gradcheck import gradcheck, GradcheckError, GradcheckResult
from . import models
from .training import TrainConfig, predict_images, train, train_cifar
from .interop.onnx import export_onnx          # onnx itself is imported only when exporting

__version__ = "0.1.0"
__all__ = ["backend", "functional", "nn", "models", "train", "train_cifar", "TrainConfig",
           "predict_images", "export_onnx", "gradcheck", "GradcheckError", "GradcheckResult"]
