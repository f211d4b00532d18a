"""Finite-difference gradient checking, in float64, for functions and modules.

    >>> from minirattn import gradcheck, functional as F
    >>> x, w = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3))
    >>> gradcheck(F.conv2d_forward, [x, w], F.conv2d_backward)   # raises if wrong
    >>> gradcheck(lambda x: F.batchnorm2d_forward(x, g, b), [x], F.batchnorm2d_backward)

The scalar that is differentiated is L = sum(y * dy) for a fixed random upstream
gradient dy (never all ones: with ones, e.g. batch norm's input gradient is
exactly zero and a backward missing its whole variance term would pass).

Two checks, for every input and (for modules) every parameter:

* directional: along random directions v, (L(x + eps v) - L(x - eps v)) / (2 eps)
  against <grad, v>; two forward passes per direction whatever the size;
* element by element, for tensors with at most ``elementwise_limit`` entries.

The error of a tensor is max_i |a_i - n_i| / max(max|a|, max|n|, floor): relative to
the gradient's own scale, so entries that are tiny compared to the rest do not
raise false alarms; ``floor`` = noise / tol, where noise is the round-off level of the
difference quotient, so a gradient that is zero up to round-off passes.
Derivation of the tolerances: docs/testing.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import backend
from .checks import check_number, check_positive_int

__all__ = ["gradcheck", "GradcheckError", "GradcheckResult"]


class GradcheckError(AssertionError):
    """The analytic gradient disagrees with finite differences."""


@dataclass
class GradcheckResult:
    ok: bool
    worst_error: float
    worst_name: str
    worst_where: str
    tol: float
    rows: list = field(default_factory=list)   # (name, check, error, where, analytic, numeric)

    def __str__(self):
        head = (
            f"gradcheck {'passed' if self.ok else 'FAILED'}: worst relative error "
            f"{self.worst_error:.3e} "
            f"(tolerance {self.tol:.1e}) in {self.worst_name} at {self.worst_where}"
        )
        lines = [head, f"  {'tensor':<32} {'check':<12} {'error':>10}  where (analytic vs numeric)"]
        for name, check, err, where, a, n in self.rows:
            flag = "  <-- exceeds tolerance" if err > self.tol else ""
            lines.append(
                f"  {name:<32} {check:<12} {err:10.3e}  {where} ({a:.6g} vs {n:.6g}){flag}"
            )
        return "\n".join(lines)


def _as_tuple(g):
    return tuple(g) if isinstance(g, (tuple, list)) else (g,)


def gradcheck(fn, inputs, backward=None, *, wrt=None, dy=None, eps=1e-5, tol=1e-6,
              n_directions=3, elementwise_limit=256, seed=0, params=True,
              raise_on_failure=True) -> GradcheckResult:
    """Compare analytic and finite-difference gradients in float64.

    fn, backward: either an op pair ``y, cache = fn(*inputs)``, ``grads = backward(dy, cache)``
        (the op contract: one gradient per floating-point input, in order, integer inputs such
        as labels getting none; a single input's may come bare; gradients after the last belong
        to arrays ``fn`` fixes, such as batch norm's gamma and beta in
        ``lambda x: batchnorm2d_forward(x, g, b)``, and are not checked), or a
        :class:`minirattn.nn.Module` (``backward`` omitted): ``y = fn(*inputs)``,
        ``dx = fn.backward(dy)``, parameter gradients read from ``fn.grads``.
    inputs: a list of arrays (a single array is accepted); non-float entries are passed through.
    wrt: indices of the inputs to check (default: every floating-point array).
    params: for modules, also check every parameter.
    Returns a :class:`GradcheckResult`; raises :class:`GradcheckError` when the worst
    error exceeds ``tol`` (unless ``raise_on_failure=False``).
    """
    from .nn.module import Module  # local: gradcheck sits beside nn, not under it

    check_number("gradcheck eps", eps, 0.0)
    check_number("gradcheck tol", tol, 0.0)
    if eps == 0 or tol == 0:
        raise ValueError(f"gradcheck: eps and tol must be > 0, got eps={eps}, tol={tol}")
    check_positive_int("gradcheck n_directions", n_directions)
    check_positive_int("gradcheck elementwise_limit", elementwise_limit, 0)
    is_module = isinstance(fn, Module)
    if not is_module and backward is None:
        raise TypeError("gradcheck: pass backward=... for a function, or a Module as fn")
    inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    inputs = [x.copy() if backend.is_array(x) else x for x in inputs]
    if wrt is None:
        wrt = [i for i, x in enumerate(inputs) if backend.is_floating(x)]
    targets = [(f"inputs[{i}]", inputs[i]) for i in wrt]
    if is_module and params:
        targets += [(name, p) for name, p, _ in fn.named_parameters()]
    if not targets:
        kinds = [str(getattr(x, "dtype", type(x).__name__)) for x in inputs]
        raise ValueError(f"gradcheck: nothing to check: no floating-point input (got {kinds})"
                         + (" and the module has no parameters" if is_module else "")
                         + "; pass float64 arrays")
    for name, t in targets:
        if not backend.is_array(t) or str(t.dtype) != "float64":
            raise TypeError(f"gradcheck: {name} must be a float64 array (finite differences in "
                            f"float32 are meaningless), got "
                            f"{getattr(t, 'dtype', type(t).__name__)}")

    def forward():
        out = fn(*inputs)
        return out if is_module else out[0]

    y0 = forward()
    xp = backend.xp_of(y0)
    # a stream of our own: seeding with the user's seed alone would make dy equal to
    # an input drawn from default_rng(seed), and e.g. batch norm's dx would vanish
    rng = backend.default_rng([seed, 0x6772616463])
    if dy is None:
        dy = xp.asarray(rng.standard_normal(y0.shape))
    else:                                   # a caller's dy goes where the output is
        dy = backend.to_device(dy, backend.name_of(y0))

    def loss():
        return float((forward() * dy).sum())

    # Round-off in L is about machine-eps * sum|y dy|; divided by 2 eps it is the noise
    # of every difference quotient. Differences below that level are not evidence, so
    # the denominator never drops below noise / tol (docs/testing.md).
    noise = 10 * 2.2e-16 * float(xp.abs(forward() * dy).sum()) / eps
    floor = max(noise / tol, 1e-300)

    # analytic gradients
    if is_module:
        fn.zero_grad()
        fn(*inputs)
        gin = _as_tuple(fn.backward(dy))
        analytic = [gin[k] for k in range(len(wrt))]
        analytic += [g.copy() for _, _, g in fn.named_parameters()] if params else []
    else:
        out = fn(*inputs)
        gin = _as_tuple(backward(dy, out[1]))
        # the op contract: one gradient per differentiable (floating-point) input, in order
        differentiable = [i for i, x in enumerate(inputs) if backend.is_floating(x)]
        if len(gin) < len(differentiable):
            raise GradcheckError(f"gradcheck: backward returned {len(gin)} gradient(s) for "
                                 f"{len(differentiable)} floating-point inputs (the op contract: "
                                 f"one per differentiable input, in order)")
        analytic = [gin[differentiable.index(i)] for i in wrt]

    rows = []
    for (name, t), g in zip(targets, analytic):
        if g is None:
            raise GradcheckError(f"gradcheck: backward returned None for {name}")
        if tuple(g.shape) != tuple(t.shape):
            raise GradcheckError(f"gradcheck: gradient of {name} has shape {tuple(g.shape)}, "
                                 f"expected {tuple(t.shape)}")
        orig = t.copy()
        for k in range(n_directions):
            v = xp.asarray(rng.standard_normal(t.shape))
            t[...] = orig + eps * v
            lp = loss()
            t[...] = orig - eps * v
            lm = loss()
            t[...] = orig
            num = (lp - lm) / (2 * eps)
            ana = float((g * v).sum())
            err = abs(ana - num) / max(abs(ana), abs(num), floor)
            rows.append((name, f"direction {k}", err, "-", ana, num))
        if t.size <= elementwise_limit:
            num = backend.numpy.zeros(t.shape)
            flat_t = t.reshape(
                -1
            )  # a view: t is ours (a contiguous copy) or a contiguous parameter
            flat_o = orig.reshape(-1)
            for i in range(t.size):
                flat_t[i] = flat_o[i] + eps
                lp = loss()
                flat_t[i] = flat_o[i] - eps
                lm = loss()
                flat_t[i] = flat_o[i]
                num.reshape(-1)[i] = (lp - lm) / (2 * eps)
            ga = backend.to_numpy(g)
            diff = abs(ga - num)
            denom = max(float(abs(ga).max()), float(abs(num).max()), floor)
            i = int(diff.argmax())
            where = str(tuple(int(v) for v in backend.numpy.unravel_index(i, t.shape)))
            rows.append((name, "elementwise", float(diff.reshape(-1)[i] / denom), where,
                         float(ga.reshape(-1)[i]), float(num.reshape(-1)[i])))

    worst = max(rows, key=lambda r: r[2])
    result = GradcheckResult(ok=worst[2] <= tol, worst_error=worst[2], worst_name=worst[0],
                             worst_where=f"{worst[1]} {worst[3]}", tol=tol, rows=rows)
    if not result.ok and raise_on_failure:
        raise GradcheckError(str(result))
    return result
