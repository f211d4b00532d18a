"""Regenerate names.json: the public names of the real CuPy package (module level and on
cupy.ndarray) that the stand-in may offer. CuPy imports without a GPU:

    pip install --target /tmp/cupy cupy-cuda12x && PYTHONPATH=/tmp/cupy python tests/cupy_standin/refresh_names.py
"""
import json
import os

import cupy

names = {
    "version": cupy.__version__,
    "module": sorted(n for n in dir(cupy) if not n.startswith("_")),
    "ndarray": sorted(n for n in dir(cupy.ndarray) if not n.startswith("_") or n in (
        "__array__", "__cuda_array_interface__", "__float__", "__int__", "__bool__", "__index__")),
}
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "names.json"), "w") as f:
    json.dump(names, f, indent=0)
print(f"CuPy {names['version']}: {len(names['module'])} module names, {len(names['ndarray'])} ndarray names")
