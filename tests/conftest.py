"""Test configuration: hypothesis profiles, the `gpu` and `slow` markers, a fresh working
directory for every test, and the CuPy stand-in for `gpu` tests on machines without a GPU.

Profiles (choose with HYPOTHESIS_PROFILE): `ci` (the default; derandomized so CI is
reproducible, no deadline, a fixed example budget) and `thorough` (many more examples,
for exploration before a release).
"""
import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=12, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _work_in_a_fresh_folder(tmp_path, monkeypatch):
    """Every test runs in its own empty working directory: training writes its run folder
    (runs/<dataset>-<arch>) there by default, never into the checkout."""
    monkeypatch.chdir(tmp_path)


def _cupy_device():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


HAVE_GPU = None


@pytest.fixture(autouse=True)
def _cupy_or_its_stand_in(request):
    """A `gpu` test runs on the real CuPy where a GPU is present, else on the strict NumPy-backed
    stand-in (tests/cupy_standin), installed as `cupy` for that test only."""
    global HAVE_GPU
    if request.node.get_closest_marker("gpu") is None:
        yield
        return
    if HAVE_GPU is None:
        HAVE_GPU = _cupy_device()
    if HAVE_GPU:
        yield
        return
    import cupy_standin
    with cupy_standin.installed():
        yield
