"""Pure forward/backward pairs: ``y, cache = op_forward(...)``; ``grads = op_backward(dy, cache)``.

The op contract (docs/conventions.md): a backward returns exactly one gradient per
differentiable input given to the forward, in order (the gradient itself when there is one);
an optional input left out (``b=None``) gets no entry; state that is not differentiated
(batch norm's running statistics) is updated by a function of its own, never mixed into the
gradients. Each family lives in one file with its forward and backward side by side; the
derivations are in ``docs/math/``.
"""
from .activations import relu_forward, relu_backward, sigmoid, sigmoid_forward, sigmoid_backward
from .attention_residual import (attention_residual_forward, attention_residual_backward,
                                 LEARNING_RULES)
from .batchnorm import (
    batchnorm2d_forward, batchnorm2d_backward, batchnorm2d_running_stats, BATCHNORM_METHODS,
)
from .conv import conv2d_forward, conv2d_backward, conv_output_size, CONV_METHODS
from .mask import (
    f1_mixed_forward, f1_mixed_backward, f2_channel_forward, f2_channel_backward,
    f3_spatial_forward, f3_spatial_backward, mask_activation_forward, mask_activation_backward,
    MASK_ACTIVATIONS,
)
from .linear import linear_forward, linear_backward
from .loss import softmax_cross_entropy, log_softmax
from .pool import (
    maxpool2d_forward,
    maxpool2d_backward,
    POOL_METHODS,
    global_avgpool_forward,
    global_avgpool_backward,
)
from .upsample import bilinear_forward, bilinear_backward, interpolation_matrix

__all__ = [n for n in dir() if not n.startswith("_")]
