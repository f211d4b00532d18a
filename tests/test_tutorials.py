"""Every tutorial runs, in its fast mode, and every assert in it holds."""
import os
import pathlib
import subprocess
import sys

import pytest

TUTORIALS = sorted((pathlib.Path(__file__).resolve().parents[1] / "tutorials").glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs(path, tmp_path):
    env = dict(os.environ, MINIRATTN_FAST="1", MPLBACKEND="Agg")
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env, timeout=600,
                         cwd=tmp_path)
    assert out.returncode == 0, f"{path.name} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
