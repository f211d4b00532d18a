"""Input validation shared by the functional ops.

Every op checks its inputs at the boundary and raises ``ValueError`` / ``TypeError``
messages that name what was expected and what came, instead of letting a deep
NumPy traceback surface later.
"""
from __future__ import annotations

from .. import backend


def check_array(name: str, a, ndim=None, floating: bool = True, finite: bool = False):
    if not backend.is_array(a):
        raise TypeError(f"{name}: expected a numpy or cupy array, got {type(a).__name__}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got {a.ndim}-D with shape {tuple(a.shape)}")
    if floating and not backend.is_floating(a):
        raise TypeError(f"{name}: expected a floating-point array (float32/float64), got dtype {a.dtype}")
    if finite:
        xp = backend.xp_of(a)
        if not bool(xp.isfinite(a).all()):
            raise ValueError(f"{name}: expected finite values, got NaN or inf")
    return a


def check_same_dtype(**arrays):
    items = [(k, v) for k, v in arrays.items() if v is not None]
    dtypes = {str(v.dtype) for _, v in items}
    if len(dtypes) > 1:
        desc = ", ".join(f"{k}={v.dtype}" for k, v in items)
        raise TypeError(f"expected all arrays to share one dtype, got {desc}")


def check_positive_int(name: str, v, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) and not (hasattr(v, "__index__")):
        raise TypeError(f"{name}: expected an int, got {type(v).__name__} {v!r}")
    v = int(v)
    if v < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {v}")
    return v


def check_choice(name: str, value, choices) -> None:
    """Raise ``ValueError`` naming the allowed values when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}: expected one of {choices}")


def pair(name: str, v, minimum: int = 1):
    """Turn ``3`` or ``(3, 3)`` into a validated pair of ints."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name}: expected an int or a pair, got {v!r}")
        return check_positive_int(name, v[0], minimum), check_positive_int(name, v[1], minimum)
    v = check_positive_int(name, v, minimum)
    return v, v
