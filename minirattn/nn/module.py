"""The Module base class: parameters, gradients, buffers, children, and their bookkeeping.

Contract (docs/conventions.md):
    y = m(x)              # forward; caches what backward needs
    dx = m.backward(dy)   # returns dL/dx and ACCUMULATES into m.grads
    m.params / m.grads    # this module's own tensors, name -> array
    m.named_parameters()  # (dotted_name, param, grad) over the whole tree
    m.zero_grad(); m.train(); m.eval()
    m.state_dict() / m.load_state_dict(d)   # PyTorch-style dotted keys
    m.to("cupy") / m.to("numpy") / m.to(dtype="float64")
"""
from __future__ import annotations

import contextlib
import copy
from collections import OrderedDict
from dataclasses import dataclass, field

from .. import backend


@dataclass
class FlatGroup:
    """The parameters and gradients of one dtype, each tensor a view into one 1-D buffer.

    ``slices[name] = (start, stop)`` in layout order; the tensors ``flatten_parameters``' ``first``
    chose come first and take ``params[:n_first]``."""
    params: object
    grads: object
    n_first: int
    slices: dict = field(default_factory=dict)


@backend.fuse
def _add_into(xp, *arrays):
    """accumulators += gradients, in place: ``arrays`` is the accumulators, then as many
    gradients of the same shapes."""
    half = len(arrays) // 2
    for acc, g in zip(arrays[:half], arrays[half:]):
        acc += g


class Module:
    """Base class. Subclasses fill ``self.params`` (and ``self.buffers``) in ``__init__``
    and implement ``forward`` and ``backward``; child modules assigned as attributes
    are registered automatically, in assignment order."""

    def __init__(self):
        object.__setattr__(self, "_children", OrderedDict())
        self.params: dict = {}
        self.grads: dict = {}
        self.buffers: dict = {}
        self.training = True

    def __setattr__(self, name, value):
        if isinstance(value, Module):
            self._children[name] = value
        object.__setattr__(self, name, value)

    # -- the tree -------------------------------------------------------------
    def add_module(self, name: str, module: "Module") -> "Module":
        setattr(self, name, module)
        return module

    def children(self):
        return iter(self._children.values())

    def named_modules(self, prefix: str = ""):
        yield prefix, self
        for name, child in self._children.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_parameters(self):
        """Yield (dotted_name, param, grad) for every parameter of the tree."""
        for prefix, m in self.named_modules():
            for k, p in m.params.items():
                yield (f"{prefix}.{k}" if prefix else k), p, m.grads[k]

    def parameters(self):
        return [p for _, p, _ in self.named_parameters()]

    def num_parameters(self) -> int:
        return sum(int(p.size) for _, p, _ in self.named_parameters())

    # -- parameters and gradients ---------------------------------------------
    def _init_grads(self):
        for k, p in self.params.items():
            xp = backend.xp_of(p)
            self.grads[k] = xp.zeros_like(p)

    def _accumulate_all(self, grads) -> None:
        """Add an op's parameter gradients into ``self.grads``, in the order of ``self.params``
        (the op contract: one gradient per input given, in order; docs/conventions.md). Gradients
        of one shape (batch norm's weight and bias) are added by one fused kernel on CuPy."""
        by_shape = {}
        for name, g in zip(self.params, grads, strict=True):
            by_shape.setdefault(tuple(g.shape), []).append((self.grads[name], g))
        for pairs in by_shape.values():
            _add_into(*[acc for acc, _ in pairs], *[g for _, g in pairs])

    def zero_grad(self):
        flat = getattr(self, "_flat", None)
        if flat:                                    # one whole-buffer operation per dtype
            for group in flat.values():
                group.grads.fill(0)
            return
        for m in self.modules():
            for g in m.grads.values():
                g[...] = 0

    def flatten_parameters(self, first=None) -> dict:
        """Make every parameter and gradient of the tree a view into one buffer per dtype.

        Whole-buffer operations (the optimiser's update, ``zero_grad``, a data-parallel all-reduce
        of the gradients) then cost a few launches instead of a few per tensor. ``first(name, p)``
        picks tensors to lay out first (the optimiser puts the weight-decayed ones there, so decay
        is one slice). Values are kept; names, ``state_dict`` and checkpoints do not change.
        ``to()`` lays the buffers out again. Returns {dtype name: :class:`FlatGroup`}.
        """
        entries = self._param_slots()
        by_dtype = OrderedDict()
        for name, m, k in entries:
            by_dtype.setdefault(str(m.params[k].dtype), []).append((name, m, k))
        groups = {}
        for dtype, items in by_dtype.items():
            if first is not None:
                items = sorted(items, key=lambda e: not first(e[0], e[1].params[e[2]]))  # stable
            xp = backend.xp_of(items[0][1].params[items[0][2]])
            total = sum(int(m.params[k].size) for _, m, k in items)
            group = FlatGroup(xp.empty(total, dtype=dtype), xp.zeros(total, dtype=dtype), 0)
            off = 0
            for name, m, k in items:
                p, g = m.params[k], m.grads[k]
                stop = off + int(p.size)
                m.params[k] = group.params[off:stop].reshape(p.shape)
                m.params[k][...] = p
                m.grads[k] = group.grads[off:stop].reshape(p.shape)
                m.grads[k][...] = g
                group.slices[name] = (off, stop)
                if first is not None and first(name, p):
                    group.n_first = stop
                off = stop
            groups[dtype] = group
        object.__setattr__(self, "_flat", groups)
        object.__setattr__(self, "_flat_first", first)
        return groups

    def _param_slots(self) -> list:
        """(dotted name, module, key) of every parameter, in the tree's order."""
        return [(f"{prefix}.{k}" if prefix else k, m, k) for prefix, m in self.named_modules()
                for k in m.params]

    def replica(self) -> "Module":
        """A copy of this tree that SHARES its parameters (the very same arrays, so an update of
        the model is seen by the replica) and has gradients, buffers, caches and settings of its
        own: what :class:`minirattn.distributed.BatchThreads` runs each thread's slice of the
        batch through. Flat buffers (:meth:`flatten_parameters`) are shared for the parameters
        and laid out alike for the replica's gradients (zeroed); caches are not copied."""
        keep = {id(p): p for _, p, _ in self.named_parameters()}
        for group in self.flat_groups.values():
            keep[id(group.params)] = group.params
        for m in self.modules():                    # not copied: caches and cross-rank sums
            for attr, v in vars(m).items():
                if (attr.startswith("_cache") or attr == "reduce") and v is not None:
                    keep[id(v)] = None
        clone = copy.deepcopy(self, keep)
        slots = {name: (m, k) for name, m, k in clone._param_slots()}
        for group in clone.flat_groups.values():    # the copied gradients, views again
            group.grads[...] = 0
            for name, (start, stop) in group.slices.items():
                m, k = slots[name]
                m.grads[k] = group.grads[start:stop].reshape(m.grads[k].shape)
        if not clone.flat_groups:
            clone.zero_grad()
        return clone

    @property
    def flat_groups(self) -> dict:
        """{dtype name: :class:`FlatGroup`} once :meth:`flatten_parameters` ran (the optimiser
        runs it), else {}."""
        return getattr(self, "_flat", None) or {}

    def train(self, mode: bool = True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    @contextlib.contextmanager
    def mode(self, training: bool):
        """``with m.mode(False): ...`` runs in evaluation (or training) mode, then restores the
        mode the tree was in, whatever happens inside."""
        was = self.training
        self.train(training)
        try:
            yield self
        finally:
            self.train(was)

    # -- forward/backward ------------------------------------------------------
    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dy):  # pragma: no cover - abstract
        raise NotImplementedError

    def _need_cache(self, cache):
        if cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward was called before forward")
        return cache

    # -- state -----------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, object]":
        """Dotted names -> arrays (parameters and buffers such as running_mean)."""
        out = OrderedDict()
        for prefix, m in self.named_modules():
            for k, v in list(m.params.items()) + list(m.buffers.items()):
                out[f"{prefix}.{k}" if prefix else k] = v
        return out

    def load_state_dict(self, state, strict: bool = True):
        """Copy arrays from ``state`` into this tree (to its backend and dtype).

        Keys are PyTorch-style dotted names; ``*.num_batches_tracked`` (PyTorch's
        batch-norm counter, which we do not keep) is ignored. With ``strict`` every
        key must match and every shape must agree.
        """
        own = self.state_dict()
        incoming = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
        missing = [k for k in own if k not in incoming]
        unexpected = [k for k in incoming if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(
                f"load_state_dict: missing keys {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                f"unexpected keys {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
            )
        for prefix, m in self.named_modules():
            for store in (m.params, m.buffers):
                for k in store:
                    key = f"{prefix}.{k}" if prefix else k
                    if key not in incoming:
                        continue
                    v = incoming[key]
                    if not backend.is_array(v):  # e.g. a torch tensor or a list
                        v = backend.numpy.asarray(v)
                    v = backend.to_device(v, backend.name_of(store[k]))
                    if tuple(v.shape) != tuple(store[k].shape):
                        raise ValueError(f"load_state_dict: {key} has shape {tuple(v.shape)}, "
                                         f"expected {tuple(store[k].shape)}")
                    store[k][...] = v.astype(store[k].dtype, copy=False)
        return self

    # -- run state: what a resumed run needs besides the state_dict ------------------------------
    _run_state_names = ()

    def run_state(self) -> "OrderedDict[str, object]":
        """Dotted names -> arrays that are neither parameters nor buffers but that the next
        training step reads (batch norm's shift, the previous batch's mean, about which the GPU
        path takes its one-pass statistics). Checkpoints keep them so that a resumed run goes
        on bit for bit; they are not in ``state_dict`` (PyTorch's names), and a model without
        them is just as valid (it takes its first statistics in two passes)."""
        out = OrderedDict()
        for prefix, m in self.named_modules():
            for k in m._run_state_names:
                v = getattr(m, "_cache_" + k, None)
                if v is not None:
                    out[f"{prefix}.{k}" if prefix else k] = v
        return out

    def load_run_state(self, state) -> None:
        """Put back what :meth:`run_state` gave, on this tree's backend and in its dtype; names
        this tree does not have are ignored (the state is an optimisation, not the model)."""
        for prefix, m in self.named_modules():
            for k in m._run_state_names:
                key = f"{prefix}.{k}" if prefix else k
                if key in state and m.params:
                    like = next(iter(m.params.values()))
                    v = backend.to_device(backend.numpy.asarray(backend.to_numpy(state[key])),
                                          backend.name_of(like))
                    object.__setattr__(m, "_cache_" + k, v.astype(like.dtype, copy=False))

    def to(self, backend_name: str | None = None, *, dtype=None):
        """Move every parameter, gradient and buffer to ``backend_name`` and/or cast them to
        ``dtype``."""
        if backend_name is not None:
            backend.get(backend_name)  # clear error if unavailable
        for m in self.modules():
            for store in (m.params, m.grads, m.buffers):
                for k, v in store.items():
                    if backend_name is not None:
                        v = backend.to_device(v, backend_name)
                    if dtype is not None:
                        v = v.astype(dtype)
                    store[k] = v
            m._on_move()
        if getattr(self, "_flat", None):            # moved tensor by tensor: lay them out again
            self.flatten_parameters(self._flat_first)
        return self

    def _on_move(self):
        """Hook for modules that hold derived arrays; drops stale caches."""
        for attr in list(vars(self)):
            if attr.startswith("_cache"):
                object.__setattr__(self, attr, None)

    @property
    def backend(self) -> str:
        for _, p, _ in self.named_parameters():
            return backend.name_of(p)
        return "numpy"

    @property
    def dtype(self):
        for _, p, _ in self.named_parameters():
            return p.dtype
        return None

    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._children.items():
            sub = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        return "\n".join(lines) + ("\n)" if len(lines) > 1 else ")")
