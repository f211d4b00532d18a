"""The main job as a user runs it: `minirattn train` (every core by default: --procs auto) against
`minirattn train --procs 1` (one process, only its matrix products threaded) and `--procs 1
--threads 2` (one process, the batch over two threads), alternating, two runs each; images/s from
each run's own history.

    python benchmarks/procs.py --iterations 200 --rounds 2

Each run is the demo (attention56_small on `shapes`, batch 32) for --iterations iterations in a
fresh folder; the figure is the median of the run's logged images/s after its first log row (the
first holds the start-up). Prints one row per run and the ratio of the medians, and writes
results/procs-DATE.json (or --out) with the environment line (environment.py). Timings only: the equality of the
runs is proven in tests/test_mpi.py and tests/test_batch_threads.py.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


#: The command lines compared: name -> extra arguments of `minirattn train`.
CONFIGS = {"auto": ["--procs", "auto"], "1": ["--procs", "1"],
           "1x2": ["--procs", "1", "--threads", "2"]}


def one_run(procs: str, iterations: int) -> dict:
    folder = tempfile.mkdtemp(prefix=f"procs-{procs}-")
    cmd = [sys.executable, "-m", "minirattn", "train", *CONFIGS[procs], "--iterations",
           str(iterations), "--eval-every", str(iterations), "--checkpoint-dir", folder,
           "--no-progress"]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t
    with open(os.path.join(folder, "metrics.json")) as f:
        metrics = json.load(f)
    rates = [h["images_per_s"] for h in metrics["history"][1:]]
    return dict(procs=procs, ranks=metrics["config"]["ranks"],
                threads=metrics["config"].get("threads", 1), wall_s=wall,
                images_per_s=statistics.median(rates))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default=os.path.join(HERE, "results",
                                                 f"procs-{time.strftime('%Y-%m-%d')}.json"),
                   help="where the runs go (default: results/procs-DATE.json, so that a stored "
                        "day's runs are never overwritten)")
    args = p.parse_args(argv)
    from environment import describe, line
    print(line())
    runs = []
    for _ in range(args.rounds):
        for procs in CONFIGS:
            r = one_run(procs, args.iterations)
            runs.append(r)
            print(f"{' '.join(CONFIGS[procs]):>24}: {r['ranks']} rank(s) x {r['threads']} "
                  f"thread(s), {r['images_per_s']:.1f} images/s, {r['wall_s']:.0f} s in all")
    med = {p: statistics.median(r["images_per_s"] for r in runs if r["procs"] == p)
           for p in CONFIGS}
    spread = {p: (max(v) - min(v)) / statistics.median(v) for p in med
              for v in [[r["images_per_s"] for r in runs if r["procs"] == p]]}
    for p in ("auto", "1x2"):
        print(f"{' '.join(CONFIGS[p])} / --procs 1: {med[p] / med['1']:.2f}x "
              f"images/s (spread {100 * spread[p]:.0f}% / {100 * spread['1']:.0f}%)")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(environment=describe(), iterations=args.iterations, runs=runs,
                       ratios={p: med[p] / med["1"] for p in ("auto", "1x2")}, spread=spread),
                  f, indent=1)


if __name__ == "__main__":
    main()
