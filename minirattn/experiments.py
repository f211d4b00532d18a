"""The paper's experiments, one command each: ``minirattn reproduce TABLE``.

    minirattn reproduce table1 --seeds 3 --jobs 2        # small scale: Fashion-MNIST, 2 CPU cores
    minirattn reproduce table3 --scale paper --backend cupy --download   # the paper's CIFAR-10 runs

A table is a declared grid (:data:`TABLES`): variants (network, mask activation, learning rule,
mask, label noise) times seeds, each run a :class:`~minirattn.training.TrainConfig` built from the
scale's settings (:data:`SCALES`) and the variant's. Runs are idempotent and resumable: a run
whose ``result.json`` exists is skipped, an interrupted one continues from its last checkpoint
(and gives the result an uninterrupted run gives: the data order is a function of the seed and the
iteration). ``jobs`` runs independent runs side by side, one thread each; under ``mpiexec`` each
run is data-parallel instead. The results: ``<out>/<table>-<scale>.json`` (every run: its
configuration, seed, final and best test error, curve, wall time, version, commit, machine, and
the summary), a printed table next to the paper's numbers with each of the paper's orderings
tested over seeds (:func:`paired_difference`), and ``<out>/<table>-<scale>.png``.

The small scale, decided once for all tables before any was run (docs/results.md says why):
every network at 1/8 of the paper's widths (stages 8, 16, 32 channels; depths and layouts as the
paper's), Fashion-MNIST (28 px padded to 32, one channel), 800 iterations of batch 32 (0.43 of an
epoch), tested on the first 2,000 test images at iterations 400 and 800, the paper's recipe
otherwise (LR 0.1 divided by 10 at 40% and 60%, Nesterov, momentum 0.9, weight decay 1e-4,
crop-and-flip augmentation).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field

from . import __version__
from .backend import student_t_ppf
from .checks import check_choice, check_positive_int

#: The paper's CIFAR-10 test errors (%), by variant label.
PAPER = {
    "table1": {"mixed": 5.52, "channel": 6.24, "spatial": 6.33},
    "table3": {"arl-56": 5.52, "arl-92": 4.99, "arl-128": 4.44, "arl-164": 4.31,
               "nal-56": 5.89, "nal-92": 5.35, "nal-128": 5.57, "nal-164": 7.18},
    "table4": {"soft": 5.52, "local": 6.48},
    "table5": {"attention92-10": 5.15, "attention92-30": 5.79, "attention92-50": 7.27,
               "attention92-70": 15.75, "resnet164-10": 5.93, "resnet164-30": 6.61,
               "resnet164-50": 8.35, "resnet164-70": 17.21},
    "fig4": {},
}


@dataclass(frozen=True)
class Variant:
    """One configuration of a table: a label and the TrainConfig settings it sets."""
    label: str
    settings: dict


@dataclass(frozen=True)
class Ordering:
    """A claim of the paper: ``better`` has the lower test error than ``worse`` (or, for
    ``kind="response"``, the later stages' response fades less under ``better``)."""
    better: str
    worse: str
    kind: str = "error"


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    variants: tuple
    orderings: tuple
    records_response: bool = False      # Fig. 4: each stage's mean |output| at every evaluation

    def variant(self, label: str) -> Variant:
        return next(v for v in self.variants if v.label == label)


def _depths(rule):
    return tuple(Variant(f"{rule}-{d}", dict(arch=f"attention{d}", learning=rule))
                 for d in (56, 92, 128, 164))


TABLES = {
    "table1": Table(
        "table1", "Table 1: attention type (Attention-56)",
        tuple(Variant(a, dict(arch="attention56", mask_activation=a))
              for a in ("mixed", "channel", "spatial")),
        (Ordering("mixed", "channel"), Ordering("mixed", "spatial"))),
    "table3": Table(
        "table3", "Table 3: attention residual learning (ARL) against naive attention (NAL)",
        _depths("arl") + _depths("nal"),
        tuple(Ordering(f"arl-{d}", f"nal-{d}") for d in (56, 92, 128, 164))),
    "table4": Table(
        "table4", "Table 4: mask structure (Attention-56)",
        (Variant("soft", dict(arch="attention56", mask="soft")),
         Variant("local", dict(arch="attention56", mask="local"))),
        (Ordering("soft", "local"),)),
    "table5": Table(
        "table5", "Table 5: label noise, Attention-92 against ResNet-164",
        tuple(Variant(f"{arch}-{n}", dict(arch=arch, label_noise=n / 100))
              for arch in ("attention92", "resnet164") for n in (10, 30, 50, 70)),
        tuple(Ordering(f"attention92-{n}", f"resnet164-{n}") for n in (10, 30, 50, 70))),
    "fig4": Table(
        "fig4", "Fig. 4: mean absolute response of each stage's output, ARL against NAL "
                "(Attention-164)",
        (Variant("arl", dict(arch="attention164", learning="arl")),
         Variant("nal", dict(arch="attention164", learning="nal"))),
        (Ordering("arl", "nal", kind="response"), Ordering("arl", "nal")),
        records_response=True),
}

#: Settings of each scale (TrainConfig fields), the same for every table.
SCALES = {
    "small": dict(dataset="fashion-mnist", iterations=800, batch_size=32, eval_every=400,
                  log_every=50, n_test=2000,
                  model_kwargs=dict(widths=(8, 16, 32), stem_width=8, final_width=32)),
    "paper": dict(dataset="cifar10", iterations=160_000, batch_size=64, eval_every=2000,
                  log_every=100),
}

#: Test images on which Fig. 4's response is measured (the first of the test split).
RESPONSE_IMAGES = 256


def run_config(table: Table, variant: Variant, scale: str, seed: int, folder: str, *,
               backend="numpy", data_dir=None, download=False, distributed=False,
               overrides=None):
    """The TrainConfig of one run (validated): the scale's settings, the variant's, the seed."""
    from .training import TrainConfig
    settings = dict(SCALES[scale], **variant.settings, seed=seed, checkpoint_dir=folder,
                    resume="auto", progress=False, backend=backend, data_dir=data_dir,
                    download=download, distributed=distributed, keep_checkpoints=1)
    settings.update(overrides or {})
    return TrainConfig(**settings)


@dataclass
class Plan:
    """Every run of a table at a scale: ``runs`` = [(variant, seed, folder)], in grid order."""
    table: Table
    scale: str
    seeds: int
    out: str
    runs: list = field(default_factory=list)

    @property
    def results_path(self):
        return os.path.join(self.out, f"{self.table.name}-{self.scale}.json")

    def result_path(self, folder):
        return os.path.join(folder, "result.json")


def plan(table: str, scale: str = "small", seeds: int = 3, out: str = "results") -> Plan:
    """Expand ``table``'s grid: every variant with seeds 0..seeds-1, each in its own folder
    ``<out>/<table>-<scale>/<label>-seed<k>``. Raises before anything runs on a bad name."""
    check_choice("table", table, sorted(TABLES))
    check_choice("scale", scale, sorted(SCALES))
    check_positive_int("seeds", seeds)
    t = TABLES[table]
    p = Plan(t, scale, seeds, out)
    for variant in t.variants:
        for seed in range(seeds):
            p.runs.append((variant, seed, os.path.join(out, f"{table}-{scale}",
                                                       f"{variant.label}-seed{seed}")))
    return p


# ---- one run -------------------------------------------------------------------------------
def read_result(path):
    """A finished run's record, or None if there is none (or it is unreadable: run it again)."""
    try:
        with open(path) as f:
            record = json.load(f)
        return record if isinstance(record, dict) and "final_error" in record else None
    except (OSError, ValueError):
        return None


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def commit() -> str:
    """The git commit of the code that runs (with "+changes" when the tree differs), or
    "unknown" outside a git checkout."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "minirattn"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("+changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> dict:
    from . import backend as B
    return dict(node=platform.node(), system=platform.platform(), cpus=os.cpu_count(),
                python=platform.python_version(), numpy=B.numpy.__version__)


def execute(config, table: Table, variant: Variant, seed: int, command: str = "",
            comm=None) -> dict:
    """Train one run (continuing its checkpoint if there is one) and write its ``result.json``
    (rank 0, the others waiting for it); returns the record. Fig. 4's runs also record each
    stage's response at every evaluation."""
    from .distributed import Communicator
    from .training import train
    comm = comm or Communicator()
    code = commit()                                  # the code this run starts with
    on_evaluate = _response_recorder(config) if table.records_response else None
    result = train(config, on_evaluate=on_evaluate, echo=lambda *a, **k: None)
    curve = [(row["iteration"], 1 - row["test_acc"]) for row in result.history
             if "test_acc" in row]
    record = dict(table=table.name, label=variant.label, seed=seed, config=result.config,
                  final_error=1 - result.final_test_accuracy,
                  best_error=min(e for _, e in curve) if curve else 1 - result.final_test_accuracy,
                  curve=curve, wall_s=result.history[-1]["elapsed_s"] if result.history else 0,
                  version=__version__, commit=code, machine=machine(), command=command,
                  finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    if table.records_response:
        record["response"] = [(row["iteration"], row["response"]) for row in result.history
                              if "response" in row]
    if config.checkpoint_dir:
        comm.collective(_write_json, os.path.join(config.checkpoint_dir, "result.json"), record)
    return record


def _response_recorder(config):
    """on_evaluate for Fig. 4: mean |output| of each stage on the first test images."""
    from . import backend as B
    from .data import load_dataset, normalize
    from .models import feature_response
    data = load_dataset(config.dataset, config.data_dir, n_test=RESPONSE_IMAGES, seed=config.seed,
                        need_train=False)
    x_uint8 = data.x_test[:RESPONSE_IMAGES]
    state = {}

    def record(model, iteration, mean):
        if "x" not in state:
            state["x"] = B.to_device(normalize(x_uint8, mean).astype(model.dtype), model.backend)
        return {"response": feature_response(model, state["x"])}
    return record


# ---- statistics ----------------------------------------------------------------------------
def mean_sd(values):
    """(mean, sample standard deviation with n - 1; 0 for one value)."""
    n = len(values)
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return m, sd


def paired_difference(worse, better, confidence=0.95) -> dict:
    """The paper's claim "``better`` < ``worse``" tested over seeds, paired: d_s = worse_s -
    better_s for every seed s both have (a seed fixes the data order, the augmentation and, for
    the same network, the initial weights, so pairing removes what the two runs share).

    Returns n, the mean and standard deviation of d, the Student-t interval of the mean at
    ``confidence`` (n - 1 degrees of freedom; none for n = 1), ``holds`` (mean d > 0) and ``sure``
    (the interval excludes 0: the ordering is unlikely to be seed noise)."""
    d = [w - b for w, b in zip(worse, better)]
    n = len(d)
    m, sd = mean_sd(d)
    if n > 1:
        half = student_t_ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
        low, high = float(m - half), float(m + half)
    else:
        low = high = float("nan")
    return dict(n=n, mean=m, sd=sd, low=low, high=high, confidence=confidence, holds=bool(m > 0),
                sure=bool(n > 1 and low > 0))


def _fade(record):
    """How much the last stage's response keeps of the first's at the end of training."""
    last = record["response"][-1][1]
    return last[-1] / last[0]


def summarize(table: Table, records: list) -> dict:
    """Per variant: n, mean and sd of the final test error (%), the paper's number; per ordering:
    :func:`paired_difference` over the seeds both variants finished."""
    by = {}
    for r in records:
        by.setdefault(r["label"], {})[r["seed"]] = r
    variants = {}
    for v in table.variants:
        runs = by.get(v.label, {})
        errors = [100 * runs[s]["final_error"] for s in sorted(runs)]
        m, sd = mean_sd(errors) if errors else (float("nan"), float("nan"))
        variants[v.label] = dict(n=len(errors), mean=m, sd=sd,
                                 best=[100 * runs[s]["best_error"] for s in sorted(runs)],
                                 paper=PAPER[table.name].get(v.label))
    orderings = []
    for o in table.orderings:
        seeds = sorted(set(by.get(o.better, {})) & set(by.get(o.worse, {})))
        if not seeds:
            continue
        if o.kind == "response":       # the claim: under NAL the later stages fade more
            worse = [-_fade(by[o.worse][s]) for s in seeds]
            better = [-_fade(by[o.better][s]) for s in seeds]
            claim = (f"the last stage keeps more of the first stage's response under {o.better} "
                     f"than under {o.worse}")
        else:
            worse = [100 * by[o.worse][s]["final_error"] for s in seeds]
            better = [100 * by[o.better][s]["final_error"] for s in seeds]
            claim = f"{o.better} has a lower test error than {o.worse}"
        orderings.append(dict(better=o.better, worse=o.worse, kind=o.kind, claim=claim,
                              seeds=seeds, **paired_difference(worse, better)))
    return dict(variants=variants, orderings=orderings)


def format_summary(table: Table, scale: str, summary: dict) -> str:
    """The printed table: this run's mean +/- sd over seeds next to the paper's number, then the
    orderings with their paired intervals."""
    lines = [f"{table.title}, scale {scale} (test error %, mean +/- sd over seeds; the paper: "
             f"CIFAR-10, one run each)",
             f"  {'variant':<16} {'here':>16} {'n':>3} {'paper':>7}"]
    for label, v in summary["variants"].items():
        here = f"{v['mean']:.2f} +/- {v['sd']:.2f}" if v["n"] else "not run"
        paper = f"{v['paper']:.2f}" if v["paper"] is not None else "-"
        lines.append(f"  {label:<16} {here:>16} {v['n']:>3} {paper:>7}")
    for o in summary["orderings"]:
        unit = "" if o["kind"] == "response" else " points"
        interval = (f"{100 * o['confidence']:.0f}% interval [{o['low']:+.2f}, {o['high']:+.2f}]"
                    if o["n"] > 1 else "one seed: no interval")
        verdict = ("holds, and the interval excludes 0" if o["sure"] else
                   "holds, but the interval includes 0" if o["holds"] else "does not hold")
        lines.append(f"  {o['claim']}: {verdict} (paired difference {o['mean']:+.2f}{unit}, "
                     f"{interval}, {o['n']} seeds)")
    return "\n".join(lines)


# ---- the runner ----------------------------------------------------------------------------
def reproduce(table: str, scale: str = "small", *, seeds: int = 3, jobs: int = 1,
              backend: str = "numpy", out: str = "results", data_dir=None, download=False,
              overrides=None, echo=print, progress=True) -> dict:
    """Run (or finish) every run of ``table`` at ``scale`` and write the results (see the module
    docstring). Everything is validated before any training; ``overrides`` replaces settings of
    every run (tests use it to make runs tiny). Returns the table's results dict."""
    from .distributed import communicator
    p = plan(table, scale, seeds, out)
    check_positive_int("jobs", jobs)
    comm = communicator("auto")                    # the ranks mpiexec started, or one process
    distributed = comm.size > 1
    if comm.rank > 0:
        echo = lambda *args, **kwargs: None       # noqa: E731 - rank 0 reports
    if distributed and jobs > 1:
        raise ValueError(f"jobs={jobs} under mpiexec: the ranks already train each run "
                         f"together; run with jobs=1")
    configs = [run_config(p.table, v, scale, s, folder, backend=backend, data_dir=data_dir,
                          download=download, distributed=distributed, overrides=overrides)
               for v, s, folder in p.runs]                          # validated, all of them
    if overrides and "iterations" in overrides:
        echo(f"note: settings changed from the {scale} scale: {overrides}")
    command = _command_line(sys.argv)
    pending = [(i, c) for i, c in enumerate(configs)
               if read_result(p.result_path(c.checkpoint_dir)) is None]
    done = len(configs) - len(pending)
    echo(f"{p.table.title}: {len(configs)} runs ({len(p.table.variants)} variants x {seeds} "
         f"seeds), {done} already finished, {len(pending)} to run"
         + (f", {jobs} at a time" if jobs > 1 and pending else ""))
    bar = _bar(len(configs), done, progress and comm.rank == 0)
    try:
        if jobs == 1:
            for i, config in pending:
                variant, seed, _ = p.runs[i]
                record = execute(config, p.table, variant, seed, command, comm)
                _tick(bar, echo, record)
        else:
            _run_side_by_side(p, configs, pending, jobs, command, bar, echo)
    finally:
        if bar is not None:
            bar.close()
    records = [read_result(p.result_path(c.checkpoint_dir)) for c in configs]
    missing = [c.checkpoint_dir for c, r in zip(configs, records) if r is None]
    if missing:
        raise RuntimeError(f"{len(missing)} runs did not finish: {missing[:3]}; run the same "
                           f"command again to resume them")
    summary = summarize(p.table, records)
    results = dict(table=p.table.name, title=p.table.title, scale=scale, seeds=seeds,
                   settings=json.loads(json.dumps(SCALES[scale])), overrides=overrides or {},
                   command=command, commit=commit(), version=__version__, machine=machine(),
                   paper=PAPER[p.table.name], runs=records, summary=summary)
    def publish():
        os.makedirs(out, exist_ok=True)
        _write_json(p.results_path, results)
        return plot_table(results, p.results_path[:-5] + ".png")
    results["figure"] = comm.collective(publish)
    echo(format_summary(p.table, scale, summary))
    echo(f"results: {p.results_path}, figure: {results['figure']}")
    return results


def _bar(total, initial, enabled):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="run", dynamic_ncols=True)


def _tick(bar, echo, record):
    text = (f"{record['label']} seed {record['seed']}: error {100 * record['final_error']:.2f}% "
            f"({record['wall_s']:.0f} s)")
    if bar is not None:
        bar.set_postfix_str(text)
        bar.update(1)
    else:
        echo(text)


def _run_side_by_side(p, configs, pending, jobs, command, bar, echo):
    """Each pending run in its own process (one BLAS thread), at most ``jobs`` at once."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    queue, running = list(pending), []
    while queue or running:
        while queue and len(running) < jobs:
            i, config = queue.pop(0)
            variant, seed, folder = p.runs[i]
            os.makedirs(folder, exist_ok=True)
            spec = json.dumps(dict(table=p.table.name, label=variant.label, seed=seed,
                                   config=dataclasses.asdict(config), command=command))
            log = open(os.path.join(folder, "log.txt"), "a")
            proc = subprocess.Popen([sys.executable, "-m", "minirattn.experiments", spec],
                                    stdout=log, stderr=subprocess.STDOUT, env=env)
            running.append((proc, log, folder))
        time.sleep(0.5)
        for item in list(running):
            proc, log, folder = item
            if proc.poll() is None:
                continue
            running.remove(item)
            log.close()
            record = read_result(p.result_path(folder))
            if proc.returncode != 0 or record is None:
                for other, other_log, _ in running:
                    other.terminate()
                    other.wait()
                    other_log.close()
                raise RuntimeError(f"the run in {folder} failed (exit {proc.returncode}); its "
                                   f"output is in {os.path.join(folder, 'log.txt')}. The other "
                                   f"runs were stopped; run the same command again to resume")
            _tick(bar, echo, record)


def _command_line(argv) -> str:
    """The command as a user would type it: ``minirattn ...`` for the entry point or
    ``python -m minirattn``, not the path of the script that ran it on this machine."""
    first = os.path.basename(argv[0]) if argv else ""
    if first in ("minirattn", "__main__.py") or argv[0].endswith(os.path.join("minirattn",
                                                                                "__main__.py")):
        return " ".join(["minirattn", *argv[1:]])
    return " ".join(argv)


def _child(spec_json):
    """``python -m minirattn.experiments SPEC``: one run, for :func:`_run_side_by_side`."""
    from .training import TrainConfig
    spec = json.loads(spec_json)
    table = TABLES[spec["table"]]
    config = TrainConfig(**spec["config"])
    execute(config, table, table.variant(spec["label"]), spec["seed"], spec["command"])


# ---- the figure ----------------------------------------------------------------------------
def plot_table(results: dict, path: str) -> str:
    """Test error per variant (mean, error bar = sd over seeds, one dot per seed) next to the
    paper's numbers; Fig. 4: each stage's response over training, ARL and NAL."""
    from .viz import plot_reproduction
    return plot_reproduction(results, path)


if __name__ == "__main__":
    _child(sys.argv[1])
