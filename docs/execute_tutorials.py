"""Run tutorials in full (not their fast mode) and store the executed notebooks for the site.

    python docs/execute_tutorials.py 09 10          # writes tutorials/09_*.ipynb, 10_*.ipynb

The site shows a tutorial from tutorials/NN_name.ipynb when that file exists (docs/hooks.py), so
its page carries what the full run printed and drew, not a fast-mode run that trains for a few
iterations. Each notebook is the tutorial's own cells (the tests check that they still equal the
.py) with their outputs, and a note under the title saying where the outputs come from: the
commit, the date, the time it took, and the NumPy and BLAS that ran it. Commit first, so the
note names the code that made the outputs; re-run this after changing such a tutorial.
"""
import argparse
import datetime
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

import jupytext
import nbformat
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTE_TAG = "stored-run"


def _commit():
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                            ":!tutorials/*.ipynb"],     # the stored runs are what this writes
                           cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return sha + (" with uncommitted changes" if dirty else "")


def _blas():
    """The BLAS library and kernel NumPy ran with (threadpoolctl), and the OPENBLAS_* settings."""
    try:
        from threadpoolctl import threadpool_info
        blas = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')} kernels, "
                f"{i.get('num_threads')} threads)" for i in threadpool_info()
                if i.get("user_api") == "blas"]
    except ImportError:
        blas = ["unknown (threadpoolctl not installed)"]
    env = [f"`{k}={v}`" for k, v in sorted(os.environ.items()) if k.startswith("OPENBLAS_")]
    return ", ".join(blas) + "; " + (", ".join(env) if env else "no `OPENBLAS_*` variables set")


def run(path, timeout, commit):
    nb = jupytext.read(path)
    env = {k: v for k, v in os.environ.items() if k != "MINIRATTN_FAST"}
    env["MPLBACKEND"] = "Agg"
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:          # the kernel's working folder
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": work}}).execute(env=env)
    seconds = time.perf_counter() - start
    import numpy
    note = (f"> **Stored run.** The outputs on this page come from a full run of "
            f"`{path.name}` (not its fast mode), stored with the site: commit {commit}, "
            f"{datetime.date.today().isoformat()}, {seconds / 60:.1f} minutes on "
            f"{os.cpu_count()} cores; Python {platform.python_version()}, NumPy "
            f"{numpy.__version__}, BLAS {_blas()}. The figures of a run depend on the BLAS "
            f"kernel's summation order; `python tutorials/{path.name}` runs it again, and "
            f"`python docs/execute_tutorials.py {path.name[:2]}` stores it again.")
    cell = nbformat.v4.new_markdown_cell(note, metadata={"tags": [NOTE_TAG]})
    nb.cells.insert(1, cell)            # under the title (the page title is the first heading)
    nb.metadata["minirattn"] = {"commit": commit, "seconds": round(seconds, 1)}
    out = path.with_suffix(".ipynb")
    tmp = out.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    tmp.replace(out)
    print(f"{out.relative_to(ROOT)}: {seconds:.0f} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("numbers", nargs="+", help="tutorial numbers, e.g. 09 10")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = ap.parse_args()
    commit = _commit()                  # the code the runs start with
    for n in args.numbers:
        matches = sorted((ROOT / "tutorials").glob(f"{int(n):02d}_*.py"))
        if not matches:
            sys.exit(f"no tutorial numbered {n} in tutorials/")
        run(matches[0], args.timeout, commit)


if __name__ == "__main__":
    main()
