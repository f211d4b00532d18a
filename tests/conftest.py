"""Test configuration: hypothesis profiles, the `gpu` and `slow` markers, a fresh working
directory for every test.

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


def pytest_collection_modifyitems(config, items):
    if any(item.get_closest_marker("gpu") for item in items) and not _cupy_device():
        skip = pytest.mark.skip(reason="needs CuPy and a CUDA device")
        for item in items:
            if item.get_closest_marker("gpu"):
                item.add_marker(skip)
