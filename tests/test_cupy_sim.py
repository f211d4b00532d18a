"""Real CuPy checks the GPU path, with no GPU: CuPy 14.2 over a simulated sm_90 device.

Each test runs tests/cupy_sim/exercise.py in a subprocess (the simulated device must be in place
before CuPy is imported; the rest of the suite keeps the NumPy-backed stand-in, which checks
numbers). Real CuPy traces every ``backend.fuse`` function, generates its kernel and NVIDIA's NVRTC
compiles it for sm_90; every launch, cuBLAS call, synchronisation and copy to the host is
recorded. Needs the ``gpu-sim`` extra (skipped without it, unless MINIRATTN_REQUIRE_GPU_SIM=1,
as in CI). docs/testing.md, "Real CuPy over a simulated device".
"""
import importlib.metadata
import importlib.util
import os

import pytest

from cupy_sim import exercise

#: Kernel launches plus cuBLAS calls of one full-width Attention-92 training step at batch 64
#: (2,890 on 2026-12-07: benchmarks/README.md).
LAUNCH_BUDGET = 3000


def _have_simulation():
    """The gpu-sim extra: CuPy 14.2 for CUDA 12 (the simulation is written against it) and
    NVIDIA's NVRTC and runtime headers; another CuPy (a GPU machine's) is not simulated."""
    try:
        version = importlib.metadata.version("cupy-cuda12x")
    except importlib.metadata.PackageNotFoundError:
        return False
    headers = ("nvidia.cuda_nvrtc", "nvidia.cuda_runtime")
    return version.startswith("14.2.") and all(importlib.util.find_spec(m) for m in headers)


if not _have_simulation():
    if os.environ.get("MINIRATTN_REQUIRE_GPU_SIM") == "1":
        raise RuntimeError("MINIRATTN_REQUIRE_GPU_SIM=1 but the gpu-sim extra (CuPy 14.2 for "
                           "CUDA 12, NVRTC 12.9) is not installed: pip install -e '.[gpu-sim]'")
    pytest.skip("the gpu-sim extra is not installed", allow_module_level=True)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report():
    """The package's fused functions in every scenario, and two Attention-92 training steps."""
    return exercise.run("--step", "attention92", "64")


def test_real_cupy_compiles_every_fused_function_as_numpy_types_it(report):
    assert report["cupy"].startswith("14.2.")
    assert len(report["fused"]) >= 16
    assert exercise.problems(report) == []


def test_attention92_step_stays_within_the_launch_budget_and_never_waits(report):
    step = report["step"]
    assert step["syncs"] == [] and step["to_host"] == []
    assert step["unsupported"] == []
    total = step["n_launches"] + step["n_cublas"]
    top = sorted(step["by_site"].items(), key=lambda kv: -kv[1])[:12]
    assert total <= LAUNCH_BUDGET, f"{total} launches + cuBLAS calls; the most: {top}"


def test_a_planted_defect_of_each_kind_is_caught():
    planted = os.path.join(os.path.dirname(exercise.__file__), "planted.py")
    report = exercise.run("--planted", planted, "--no-scenarios")
    names = [n for n in report["fused"] if n.startswith("planted.")]
    found = "\n".join(exercise.problems(report, names))
    assert "planted_reshape: CuPy refused it" in found
    assert "planted_bitwise: CuPy refused it" in found
    assert "planted_int_scalars: its float kernel computes in signed char" in found
    assert "planted_float_scalars: its float kernel computes in float16" in found
    assert "planted_dtype(" in found and "CuPy returns ['array', [4, 3], 'float64']" in found
    assert "planted_unreached: no scenario calls this fused function" in found
    assert any("planted.py" in site for _, site in report["to_host"])
