"""What a speed figure depends on, in one line and as a dict: NumPy's and PyTorch's versions,
numba's and whether minirattn's compiled kernels run (batch norm's compiled path), the BLAS library each process loaded and the kernel it chose (threadpoolctl), its threads, and the
OPENBLAS_* variables (this machine sets OPENBLAS_CORETYPE, which picks older, slower kernels than
a user's machine would). bench.py and distributed.py print it, so a figure can be reproduced."""
from __future__ import annotations

import os


def describe() -> dict:
    import numpy
    info = {"numpy": numpy.__version__, "cpus": os.cpu_count()}
    try:
        import torch
        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    try:
        import numba
        info["numba"] = numba.__version__
    except ImportError:
        info["numba"] = None                    # pip install -e ".[fast]"
    from minirattn import backend
    info["jit"] = backend.jit_available()
    try:
        from threadpoolctl import threadpool_info
        info["blas"] = [dict(library=i.get("internal_api"), version=i.get("version"),
                             kernel=i.get("architecture"), threads=i.get("num_threads"),
                             path=os.path.basename(i.get("filepath", "")))
                        for i in threadpool_info() if i.get("user_api") == "blas"]
    except ImportError:
        info["blas"] = None                     # pip install threadpoolctl (the bench extra)
    info["openblas_env"] = {k: v for k, v in sorted(os.environ.items())
                            if k.startswith("OPENBLAS_")}
    return info


def line(info=None) -> str:
    info = info or describe()
    blas = ("BLAS unknown (threadpoolctl not installed)" if info["blas"] is None else
            "; ".join(f"{b['library']} {b['version']} {b['kernel']} kernels, {b['threads']} "
                      f"threads ({b['path']})" for b in info["blas"]) or "no BLAS found")
    env = ", ".join(f"{k}={v}" for k, v in info["openblas_env"].items()) or "none"
    jit = ("compiled kernels on" if info.get("jit") else "compiled kernels off")
    return (f"numpy {info['numpy']}, torch {info['torch'] or 'not installed'}, "
            f"numba {info.get('numba') or 'not installed'} ({jit}), "
            f"{info['cpus']} CPUs; {blas}; OPENBLAS_* variables: {env}")


if __name__ == "__main__":
    print(line())
