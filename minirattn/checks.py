"""Validation at the public boundary, in one place: functional ops, layers, models and the
training configuration all check their arguments with these helpers.

Each raises ``TypeError`` (wrong kind of value) or ``ValueError`` (right kind, wrong value) with a
message that names the argument, what was expected and what came, instead of letting a deep
NumPy traceback surface later.
"""
from __future__ import annotations

import numbers

from . import backend


def check_array(name: str, a, ndim=None, floating: bool = True, finite: bool = False):
    """``a`` is a NumPy/CuPy array, ``ndim``-D when given, float32 or float64 when ``floating``
    (float16 is refused: the ops' round-off and the gradient checks assume at least float32)."""
    if not backend.is_array(a):
        raise TypeError(f"{name}: expected a numpy or cupy array, got {type(a).__name__}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got {a.ndim}-D with shape "
                         f"{tuple(a.shape)}")
    if floating and a.dtype.char not in "fd":              # float32, float64 (not str(): slow)
        raise TypeError(f"{name}: expected a floating-point array (float32/float64), got dtype "
                        f"{a.dtype}")
    if finite:
        xp = backend.xp_of(a)
        if not bool(xp.isfinite(a).all()):
            raise ValueError(f"{name}: expected finite values, got NaN or inf")
    return a


def check_same_dtype(**arrays):
    """Every array given (None entries skipped) has the same dtype."""
    items = [(k, v) for k, v in arrays.items() if v is not None]
    dtypes = {v.dtype for _, v in items}
    if len(dtypes) > 1:
        desc = ", ".join(f"{k}={v.dtype}" for k, v in items)
        raise TypeError(f"expected all arrays to share one dtype, got {desc}")


def check_positive_int(name: str, v, minimum: int = 1) -> int:
    """An int (not a bool) >= ``minimum``; returned as a Python int."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(v).__name__} {v!r}")
    v = int(v)
    if v < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {v}")
    return v


def check_number(name: str, v, low=None, high=None, *, low_open: bool = False,
                 high_open: bool = False) -> float:
    """A real number (not a bool, not NaN) in [low, high]; ``low_open`` / ``high_open`` leave a
    bound out, a bound left None is not checked. Returned as a float."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {type(v).__name__} {v!r}")
    v = float(v)
    too_low = low is not None and (v <= low if low_open else v < low)
    too_high = high is not None and (v >= high if high_open else v > high)
    if v != v or too_low or too_high:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise ValueError(f"{name}: expected a number in {'(' if low_open else '['}{lo}, {hi}"
                         f"{')' if high_open else ']'}, got {v!r}")
    return v


def check_choice(name: str, value, choices):
    """``value`` is one of ``choices``; returned unchanged."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}: expected one of {tuple(choices)}")
    return value


def pair(name: str, v, minimum: int = 1):
    """Turn ``3`` or ``(3, 3)`` into a validated pair of ints >= ``minimum``."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name}: expected an int or a pair, got {v!r}")
        return check_positive_int(name, v[0], minimum), check_positive_int(name, v[1], minimum)
    v = check_positive_int(name, v, minimum)
    return v, v


def old_name(settings: dict, old: str, new: str, value, default):
    """The value of setting ``new``, taking it from ``settings[old]`` (popped) when it came by
    its earlier name ``old``; both given, with different values, is an error."""
    if old not in settings:
        return value
    given = settings.pop(old)
    if value != default and value != given:
        raise ValueError(f"{old} is the earlier name of {new}: give one of them, got "
                         f"{old}={given!r} and {new}={value!r}")
    return given
