"""ONNX export: a network in evaluation mode as an ONNX graph, built from its module tree.

Each module kind has one emitter below that writes its forward as ONNX nodes, next to each other
as the forwards are in the code: batch norm becomes ``BatchNormalization`` with the running
statistics (followed by ``Relu`` where the module applies it), the mask activations become their
formulas (f1 ``Sigmoid``; f2 ``x / sqrt(sum_c x^2 + eps)``; f3 ``Sigmoid`` of the standardised
map), attention residual learning ``(1 + M) * T`` (naive: ``M * T``), bilinear upsampling a
``Resize`` with ``align_corners``. Spatial sizes are fixed by the network's input size, so every
``Resize`` has constant target sizes; the batch dimension is dynamic.

The file's metadata (``metadata_props``) says what the graph cannot: ``minirattn.network`` (the
registered name), ``minirattn.classes`` (JSON list of class names, index = logit),
``minirattn.normalization`` (JSON: ``{"kind": "mean_image", "scale": 1/255, "mean": C x H x W
nested lists}`` or ``{"kind": "per_channel", "scale": 1/255, "mean": [...], "std": [...]}``; the
input is ``(x * scale - mean) / std`` of the uint8 image), ``minirattn.settings`` (JSON: mask
activation, learning rule, mask) and ``minirattn.version``.

Needs the ``onnx`` package (the ``onnx`` extra); checked against ONNX Runtime in the tests.
Usage: docs/using.md.
"""
from __future__ import annotations

import json
import os

from .. import backend as B
from .. import nn
from ..checks import pair
from ..files import write_atomically
from ..functional import conv_output_size
from ..models.attention import AttentionModule, LocalMask, MaskHead, SoftMaskBranch
from ..models.networks import ResidualAttentionNetwork
from ..models.units import InceptionUnit, ResidualUnit, ResNeXtUnit

#: The ONNX operator set the graphs use (ReduceMean / ReduceSum take their axes as inputs).
OPSET = 18


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: pip install -e '.[onnx]'") from None
    return onnx


class _Graph:
    """The nodes and initialisers being written; a value is (name, (C, H, W)) or (name, (F,))."""

    def __init__(self, onnx, dtype):
        self.onnx, self.helper = onnx, onnx.helper
        self.nodes, self.initializers, self.count = [], [], 0
        self.dtype = dtype

    def fresh(self, hint):
        self.count += 1
        return f"{hint}_{self.count}"

    def tensor(self, name, array):
        """An initialiser holding ``array`` (on the host, in the graph's dtype)."""
        a = B.to_numpy(array)
        if a.dtype.kind == "f":
            a = a.astype(self.dtype)
        self.initializers.append(self.onnx.numpy_helper.from_array(a, name))
        return name

    def constant(self, hint, values, dtype=None):
        return self.tensor(self.fresh(hint), B.numpy.asarray(values, dtype=dtype or self.dtype))

    def node(self, op, inputs, hint=None, **attrs):
        out = self.fresh(hint or op.lower())
        self.nodes.append(self.helper.make_node(op, list(inputs), [out], **attrs))
        return out


# ---- the emitters: one per module kind --------------------------------------------------------
def _conv(g, m, prefix, v):
    name, (c, h, w) = v
    (kh, kw), (sh, sw), (ph, pw) = m.kernel_size, pair("stride", m.stride), \
        pair("padding", m.padding, 0)
    inputs = [name, g.tensor(prefix + "weight", m.params["weight"])]
    if "bias" in m.params:
        inputs.append(g.tensor(prefix + "bias", m.params["bias"]))
    out = g.node("Conv", inputs, "conv", kernel_shape=[kh, kw], strides=[sh, sw],
                 pads=[ph, pw, ph, pw], group=m.groups)
    return out, (m.out_ch, conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw))


def _batchnorm(g, m, prefix, v):
    name, shape = v
    out = g.node("BatchNormalization", [
        name, g.tensor(prefix + "weight", m.params["weight"]),
        g.tensor(prefix + "bias", m.params["bias"]),
        g.tensor(prefix + "running_mean", m.buffers["running_mean"]),
        g.tensor(prefix + "running_var", m.buffers["running_var"])], "bn", epsilon=m.eps)
    return (g.node("Relu", [out]) if m.relu else out), shape


def _relu(g, m, prefix, v):
    return g.node("Relu", [v[0]]), v[1]


def _sigmoid(g, m, prefix, v):
    return g.node("Sigmoid", [v[0]]), v[1]


def _maxpool(g, m, prefix, v):
    name, (c, h, w) = v
    k, s, p = m.kernel_size, m.stride, m.padding
    out = g.node("MaxPool", [name], "pool", kernel_shape=[k, k], strides=[s, s],
                 pads=[p, p, p, p])
    return out, (c, conv_output_size(h, k, s, p), conv_output_size(w, k, s, p))


def _global_avgpool(g, m, prefix, v):
    out = g.node("Flatten", [g.node("GlobalAveragePool", [v[0]])], axis=1)
    return out, (v[1][0],)


def _linear(g, m, prefix, v):
    inputs = [v[0], g.tensor(prefix + "weight", m.params["weight"])]
    if "bias" in m.params:
        inputs.append(g.tensor(prefix + "bias", m.params["bias"]))
    return g.node("Gemm", inputs, "fc", transB=1), (m.out_features,)


def upsample(g, v, size):
    """Bilinear, align_corners=True, to the static ``size`` (H, W); the batch stays dynamic."""
    name, (c, _, _) = v
    batch_and_channels = g.node("Slice", [g.node("Shape", [name]),
                                          g.constant("zero", [0], "int64"),
                                          g.constant("two", [2], "int64")])
    sizes = g.node("Concat", [batch_and_channels, g.constant("hw", list(size), "int64")], axis=0)
    out = g.node("Resize", [name, "", "", sizes], "upsample", mode="linear",
                 coordinate_transformation_mode="align_corners")
    return out, (c, *size)


def _mixed(g, x):
    return g.node("Sigmoid", [x])


def _channel(g, x, eps=1e-12):
    squares = g.node("ReduceSum", [g.node("Mul", [x, x]), g.constant("axis1", [1], "int64")],
                     keepdims=1)
    norm = g.node("Sqrt", [g.node("Add", [squares, g.constant("eps", eps)])])
    return g.node("Div", [x, norm])


def _spatial(g, x, eps=1e-5):
    hw = g.constant("axes23", [2, 3], "int64")
    centred = g.node("Sub", [x, g.node("ReduceMean", [x, hw], keepdims=1)])
    var = g.node("ReduceMean", [g.node("Mul", [centred, centred]), hw], keepdims=1)
    std = g.node("Sqrt", [g.node("Add", [var, g.constant("eps", eps)])])
    return g.node("Sigmoid", [g.node("Div", [centred, std])])


#: The ONNX form of each mask activation of ``functional.MASK_ACTIVATIONS``.
MASK_ACTIVATION_GRAPHS = {"mixed": _mixed, "channel": _channel, "spatial": _spatial}


def _mask_activation(g, m, prefix, v):
    if m.activation not in MASK_ACTIVATION_GRAPHS:
        raise ValueError(f"no ONNX form for the mask activation {m.activation!r}: add one to "
                         f"minirattn.interop.onnx.MASK_ACTIVATION_GRAPHS")
    return MASK_ACTIVATION_GRAPHS[m.activation](g, v[0]), v[1]


def _sequential(g, m, prefix, v):
    for name, child in m._children.items():
        v = emit(g, child, f"{prefix}{name}.", v)
    return v


def _child(g, m, prefix, name, v):
    return emit(g, getattr(m, name), f"{prefix}{name}.", v)


def _add(g, a, b):
    return g.node("Add", [a[0], b[0]]), a[1]


def _residual_unit(g, m, prefix, v):
    a = _child(g, m, prefix, "bn1", v)
    r = _child(g, m, prefix, "conv1", a)
    r = _child(g, m, prefix, "conv2", _child(g, m, prefix, "bn2", r))
    r = _child(g, m, prefix, "conv3", _child(g, m, prefix, "bn3", r))
    return _add(g, r, _child(g, m, prefix, "shortcut", a) if m.shortcut is not None else v)


def _resnext_unit(g, m, prefix, v):
    r = _child(g, m, prefix, "bn1", _child(g, m, prefix, "conv1", v))
    r = _child(g, m, prefix, "bn2", _child(g, m, prefix, "conv2", r))
    r = _child(g, m, prefix, "bn3", _child(g, m, prefix, "conv3", r))
    s = _child(g, m, prefix, "shortcut", v) if m.shortcut is not None else v
    return _child(g, m, prefix, "relu", _add(g, r, s))


def _inception_unit(g, m, prefix, v):
    a = _child(g, m, prefix, "bn", v)
    branches = [_child(g, m, prefix, f"branch{i}", a) for i in (1, 2, 3)]
    (_, h, w) = branches[0][1]
    h_cat = g.node("Concat", [b[0] for b in branches], axis=1), (3 * m.branch_width, h, w)
    r = _child(g, m, prefix, "mix", h_cat)
    return _add(g, r, _child(g, m, prefix, "shortcut", a) if m.shortcut is not None else v)


def _soft_mask_branch(g, m, prefix, v):
    feats, d = [], v
    for i in range(m.k):                                  # bottom-up: pool, then r units
        d = _child(g, m, prefix, f"down{i}", _child(g, m, prefix, f"pool{i}", d))
        feats.append(d)
    u = feats[-1]
    for i in reversed(range(m.k - 1)):                    # top-down: upsample + skip, r units
        u = _add(g, upsample(g, u, feats[i][1][1:]), _child(g, m, prefix, f"skip{i}", feats[i]))
        u = _child(g, m, prefix, f"up{i}", u)
    return _child(g, m, prefix, "head", upsample(g, u, v[1][1:]))


def _local_mask(g, m, prefix, v):
    return _child(g, m, prefix, "head", _child(g, m, prefix, "units", v))


def _mask_head(g, m, prefix, v):
    return _child(g, m, prefix, "body", v)


def _attention_module(g, m, prefix, v):
    a = _child(g, m, prefix, "pre", v)
    t = _child(g, m, prefix, "trunk", a)
    mask = _child(g, m, prefix, "mask", a)
    if m.learning == "arl":                               # H = (1 + M) T
        gate = g.node("Add", [mask[0], g.constant("one", 1.0)])
    else:                                                 # H = M T
        gate = mask[0]
    return _child(g, m, prefix, "post", (g.node("Mul", [gate, t[0]], "attention"), t[1]))


def _network(g, m, prefix, v):
    h = _child(g, m, prefix, "stem", v)
    for i in range(len(m.stages)):
        h = _child(g, m, prefix, f"stage{i + 1}", h)
    h = _child(g, m, prefix, "final", h)
    if m.bn is not None:
        h = _child(g, m, prefix, "bn", h)
    return _child(g, m, prefix, "fc", _child(g, m, prefix, "pool", h))


EMITTERS = {
    nn.Conv2d: _conv, nn.BatchNorm2d: _batchnorm, nn.ReLU: _relu, nn.Sigmoid: _sigmoid,
    nn.MaxPool2d: _maxpool, nn.GlobalAvgPool2d: _global_avgpool, nn.Linear: _linear,
    nn.MaskActivation: _mask_activation, nn.Sequential: _sequential,
    ResidualUnit: _residual_unit, ResNeXtUnit: _resnext_unit, InceptionUnit: _inception_unit,
    SoftMaskBranch: _soft_mask_branch, LocalMask: _local_mask, MaskHead: _mask_head,
    AttentionModule: _attention_module, ResidualAttentionNetwork: _network,
}


def emit(g, module, prefix, v):
    """Write ``module``'s evaluation-mode forward of value ``v`` into ``g``; its output value."""
    kind = type(module)
    if kind not in EMITTERS:
        raise TypeError(f"no ONNX emitter for {kind.__name__} (a module of this network): add "
                        f"one to minirattn.interop.onnx.EMITTERS")
    return EMITTERS[kind](g, module, prefix, v)


# ---- the public functions ---------------------------------------------------------------------
def onnx_model(model, *, classes=None, normalization=None):
    """The ``onnx.ModelProto`` of ``model`` (a ResidualAttentionNetwork) in evaluation mode:
    input ``input`` (N, C, S, S) float32 with N dynamic, output ``logits`` (N, num_classes)."""
    onnx = _onnx()
    if not isinstance(model, ResidualAttentionNetwork):
        raise TypeError(f"export_onnx: expected a minirattn network (models.build), got "
                        f"{type(model).__name__}")
    spec, helper = model.spec, onnx.helper
    g = _Graph(onnx, B.numpy.float32)
    shape = (spec.in_channels, spec.input_size, spec.input_size)
    logits, _ = emit(g, model, "", ("input", shape))
    f32 = onnx.TensorProto.FLOAT
    graph = helper.make_graph(
        g.nodes, model.name,
        [helper.make_tensor_value_info("input", f32, ["N", *shape])],
        [helper.make_tensor_value_info(logits, f32, ["N", model.num_classes])],
        initializer=g.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="minirattn")
    proto.ir_version = min(proto.ir_version, 10)        # readable by ONNX Runtime 1.17 and later
    classes = list(classes) if classes is not None else [str(i) for i in range(model.num_classes)]
    if len(classes) != model.num_classes:
        raise ValueError(f"export_onnx: {len(classes)} class names for a network of "
                         f"{model.num_classes} classes")
    from .. import __version__
    meta = {"minirattn.network": model.name, "minirattn.classes": json.dumps(classes),
            "minirattn.settings": json.dumps(model.config), "minirattn.version": __version__}
    if normalization is not None:
        meta["minirattn.normalization"] = json.dumps(normalization)
    helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def normalization_record(mean, std=None) -> dict:
    """The ``minirattn.normalization`` entry for a run's mean image (C, H, W) or, with ``std``,
    its per-channel mean and std (C, 1, 1)."""
    mean = B.to_numpy(mean)
    if std is None:
        return {"kind": "mean_image", "scale": 1 / 255, "mean": mean.tolist()}
    return {"kind": "per_channel", "scale": 1 / 255, "mean": mean.reshape(-1).tolist(),
            "std": B.to_numpy(std).reshape(-1).tolist()}


def export_onnx(model, path: str, *, classes=None, mean=None, std=None) -> str:
    """Write ``model`` in evaluation mode to ``path`` as ONNX (written to a temporary file and
    renamed: nothing half-written); ``classes`` and the normalisation (``mean`` image, or
    per-channel ``mean`` and ``std``) go into the metadata. Returns ``path``."""
    proto = onnx_model(model, classes=classes,
                       normalization=normalization_record(mean, std) if mean is not None else None)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OSError(f"cannot write {path}: the folder {folder} does not exist")
    return write_atomically(path, proto.SerializeToString())


def export_checkpoint(checkpoint: str, path: str) -> str:
    """Export the network a training checkpoint holds, with its run's class names and
    normalisation (``minirattn export``)."""
    from ..training.trained import channel_std, class_names, load_trained
    model, mean, meta = load_trained(checkpoint)
    return export_onnx(model, path, classes=class_names(meta), mean=mean,
                       std=channel_std(meta))
