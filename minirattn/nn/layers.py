"""Stateful layers: thin Modules over the pure ops in ``minirattn.functional``.

Each forward keeps the op's cache; each backward returns dL/dx and adds the
parameter gradients into ``self.grads`` (accumulation, as the contract says).
"""
from __future__ import annotations

import math

from .. import backend
from .. import functional as F
from ..checks import check_choice, check_positive_int, pair
from .module import Module


def _he_normal(rng, shape, fan_in, dtype):
    """He (MSRA) initialisation: N(0, 2 / fan_in)."""
    return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(dtype)


class Conv2d(Module):
    """2-D convolution. Weight (out_ch, in_ch / groups, k, k), He-initialised (fan-in: the inputs
    one output sees, in_ch / groups k k); bias optional (zeros); ``groups`` as ResNeXt's."""

    def __init__(self, in_ch, out_ch, kernel_size, stride=1, padding=0, bias=True, *, groups=1,
                 rng=None, dtype="float32"):
        super().__init__()
        kh, kw = pair("kernel_size", kernel_size)
        check_positive_int("in_ch", in_ch)
        check_positive_int("out_ch", out_ch)
        check_positive_int("groups", groups)
        if in_ch % groups or out_ch % groups:
            raise ValueError(f"Conv2d: groups={groups} must divide in_ch ({in_ch}) and out_ch "
                             f"({out_ch})")
        self.in_ch, self.out_ch, self.kernel_size = in_ch, out_ch, (kh, kw)
        self.stride, self.padding, self.groups = stride, padding, groups
        pair("stride", stride, 1)
        pair("padding", padding, 0)
        rng = backend.default_rng(rng)
        cg = in_ch // groups
        self.params["weight"] = _he_normal(rng, (out_ch, cg, kh, kw), cg * kh * kw, dtype)
        if bias:
            self.params["bias"] = backend.numpy.zeros(out_ch, dtype=dtype)
        self._init_grads()
        self._cache = None

    def forward(self, x):
        y, self._cache = F.conv2d_forward(x, self.params["weight"], self.params.get("bias"),
                                          self.stride, self.padding, groups=self.groups)
        return y

    def backward(self, dy, dx_into=None):
        """dL/dx, added into ``dx_into`` in place (and returned) when given; adds the parameter
        gradients into ``self.grads``."""
        dx, *_ = F.conv2d_backward(dy, self._need_cache(self._cache), dx_into=dx_into,
                                   accumulate=[self.grads[k] for k in self.params])
        return dx

    def extra_repr(self):
        groups = f", groups={self.groups}" if self.groups != 1 else ""
        return (f"{self.in_ch}, {self.out_ch}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={'bias' in self.params}"
                f"{groups}")


class Linear(Module):
    """Fully connected: weight (out, in) ~ U(-1/sqrt(in), 1/sqrt(in)) as PyTorch; bias zeros."""

    def __init__(self, in_features, out_features, bias=True, *, rng=None, dtype="float32"):
        super().__init__()
        check_positive_int("in_features", in_features)
        check_positive_int("out_features", out_features)
        rng = backend.default_rng(rng)
        bound = 1.0 / math.sqrt(in_features)
        self.params["weight"] = rng.uniform(-bound, bound, (out_features, in_features)).astype(
            dtype
        )
        if bias:
            self.params["bias"] = backend.numpy.zeros(out_features, dtype=dtype)
        self.in_features, self.out_features = in_features, out_features
        self._init_grads()
        self._cache = None

    def forward(self, x):
        y, self._cache = F.linear_forward(x, self.params["weight"], self.params.get("bias"))
        return y

    def backward(self, dy):
        dx, *dparams = F.linear_backward(dy, self._need_cache(self._cache))
        self._accumulate_all(dparams)
        return dx

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}"


class BatchNorm2d(Module):
    """Batch norm over (N, H, W) per channel; gamma=1, beta=0; running mean 0, var 1.

    Training mode normalises with the batch statistics and updates the running ones
    (momentum 0.1, unbiased variance); eval mode uses the running statistics.
    ``relu=True``: the ReLU that follows is applied in the same pass, y = max(BN(x), 0) (one op
    for the BN-ReLU pair: fewer passes over the data, and on the GPU fewer kernels).
    ``reduce``: None (ordinary batch norm), or a sum over data-parallel ranks, which makes the
    statistics those of the global batch (``minirattn.distributed.sync_batchnorm`` sets it).
    """

    _run_state_names = ("shift",)       # the previous batch's mean (the GPU path's shift)

    def __init__(self, num_features, momentum=0.1, eps=1e-5, *, relu=False, dtype="float32"):
        super().__init__()
        check_positive_int("num_features", num_features)
        np = backend.numpy
        self.num_features, self.momentum, self.eps = num_features, momentum, eps
        self.relu = bool(relu)
        self.params["weight"] = np.ones(num_features, dtype=dtype)
        self.params["bias"] = np.zeros(num_features, dtype=dtype)
        self.buffers["running_mean"] = np.zeros(num_features, dtype=dtype)
        self.buffers["running_var"] = np.ones(num_features, dtype=dtype)
        self._init_grads()
        self._cache = None
        self.reduce = None

    def forward(self, x):
        stats = self.buffers["running_mean"], self.buffers["running_var"]
        shift = getattr(self, "_cache_shift", None)      # the previous batch's mean (fused path)
        y, self._cache = F.batchnorm2d_forward(
            x,
            self.params["weight"],
            self.params["bias"],
            *stats,
            training=self.training,
            eps=self.eps,
            reduce=self.reduce,
            relu=self.relu,
            momentum=self.momentum,
            shift=shift if self.training else None,
        )
        if self.training:
            self.buffers["running_mean"], self.buffers["running_var"] = \
                F.batchnorm2d_running_stats(self._cache, *stats, momentum=self.momentum)
            self._cache_shift = self._cache.batch_mean
        return y

    def backward(self, dy, plus=None):
        """dL/dx (+ ``plus``, a gradient another branch sends to the same input, added in the
        same pass); adds dgamma and dbeta into ``self.grads``."""
        dx, *dparams = F.batchnorm2d_backward(dy, self._need_cache(self._cache), plus=plus)
        self._accumulate_all(dparams)
        return dx

    def extra_repr(self):
        return f"{self.num_features}" + (", relu=True" if self.relu else "")


class _Op(Module):
    """A parameter-free layer over one functional pair: ``_forward(x, *hyper) -> (y, cache)``."""
    _forward = _backward = None

    def __init__(self):
        super().__init__()
        self._cache = None

    def _hyper(self):
        """Arguments of ``_forward`` after x."""
        return ()

    def _backward_hyper(self):
        """Arguments of ``_backward`` after (dy, cache)."""
        return ()

    def forward(self, x):
        y, self._cache = type(self)._forward(x, *self._hyper())
        return y

    def backward(self, dy):
        return type(self)._backward(dy, self._need_cache(self._cache), *self._backward_hyper())


class ReLU(_Op):
    """max(x, 0). ``inplace=True`` (as PyTorch's) overwrites the forward's input with the output
    and the backward's dy with dx: no new arrays, for places where nothing else reads them. (A
    ReLU right after a batch norm is better done by the batch norm: ``BatchNorm2d(relu=True)``.)"""
    _forward, _backward = F.relu_forward, F.relu_backward

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = bool(inplace)

    def _hyper(self):
        return (self.inplace,)

    _backward_hyper = _hyper

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class Sigmoid(_Op):
    _forward, _backward = F.sigmoid_forward, F.sigmoid_backward


class GlobalAvgPool2d(_Op):
    """(N, C, H, W) -> (N, C)."""
    _forward, _backward = F.global_avgpool_forward, F.global_avgpool_backward


class MaxPool2d(_Op):
    _forward, _backward = F.maxpool2d_forward, F.maxpool2d_backward

    def __init__(self, kernel_size=3, stride=2, padding=1):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def _hyper(self):
        return self.kernel_size, self.stride, self.padding

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class UpsampleBilinear(_Op):
    """Bilinear upsampling (align_corners=True) to the ``size`` given at call time."""
    _forward, _backward = F.bilinear_forward, F.bilinear_backward

    def forward(self, x, size):
        y, self._cache = F.bilinear_forward(x, size)
        return y


class MaskActivation(_Op):
    """The paper's mask activation: "mixed" (f1), "channel" (f2) or "spatial" (f3)."""
    _forward, _backward = F.mask_activation_forward, F.mask_activation_backward

    def __init__(self, activation="mixed"):
        super().__init__()
        # fail at construction, not at first call
        check_choice("mask_activation", activation, tuple(F.MASK_ACTIVATIONS))
        self.activation = activation

    def _hyper(self):
        return (self.activation,)

    def extra_repr(self):
        return repr(self.activation)


class Sequential(Module):
    """Children applied in order; backward runs them in reverse. Children are named "0", "1",
    .. in order, or by ``names`` (as PyTorch's ``Sequential(OrderedDict)``): a layout can then
    keep the numbers of a longer one, such as a BN-ReLU pair that is one module here and two in
    PyTorch, so that ``state_dict`` keys still match."""

    def __init__(self, *modules, names=None):
        super().__init__()
        names = [str(i) for i in range(len(modules))] if names is None else list(names)
        if len(names) != len(modules) or len(set(names)) != len(names):
            raise ValueError(f"Sequential: {len(modules)} modules need as many distinct names, "
                             f"got {names}")
        for name, m in zip(names, modules):
            self.add_module(name, m)

    def __len__(self):
        return len(self._children)

    def __getitem__(self, i):
        return list(self._children.values())[i]

    def forward(self, x):
        for m in self._children.values():
            x = m(x)
        return x

    def backward(self, dy):
        for m in reversed(list(self._children.values())):
            dy = m.backward(dy)
        return dy
