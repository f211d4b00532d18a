"""Planted defects, one per kind the simulated-device check must catch (tests/test_cupy_sim.py).

Each function is made by ``backend.fuse`` as the package's are; :func:`exercise` calls them with
real CuPy over the simulated device. None of this is part of minirattn.
"""
from minirattn import backend


@backend.fuse
def planted_reshape(xp, x):
    """Not elementwise: cupy.fuse cannot trace a reshape."""
    return x.reshape(-1) * 2


@backend.fuse
def planted_bitwise(xp, x, y):
    """bitwise_and on float32: no such CUDA operation."""
    return xp.bitwise_and(x, y)


@backend.fuse
def planted_int_scalars(xp, x, m):
    """m - 1 between two Python ints: CuPy's fusion computes it in int8 (m = 65536 wraps)."""
    return x / (m - 1)


@backend.fuse
def planted_float_scalars(xp, x, eps):
    """2 eps between two Python floats: computed in float16."""
    return x + eps * 2.0


@backend.fuse
def planted_dtype(xp, x, y):
    """NumPy gives float64 for a float32 array times a float64 0-d array; the fused kernel too,
    unless the 0-d array is cast: this one casts on NumPy only."""
    return x * (y.astype(x.dtype) if xp is backend.numpy else y)


@backend.fuse
def planted_unreached(xp, x):
    """Defined, never called: the coverage check must name it."""
    return x + 1


def exercise(cupy):
    x = cupy.ones((4, 3), cupy.float32)
    for f, args in ((planted_reshape, (x,)), (planted_bitwise, (x, x)),
                    (planted_int_scalars, (x, 65536)), (planted_float_scalars, (x, 1e-5)),
                    (planted_dtype, (x, cupy.ones((), cupy.float64)))):
        try:
            f(*args)
        except Exception:
            pass          # recorded by the harness as CuPy's refusal
    float(x.sum())        # a host-blocking read: the device -> host copy must be seen
