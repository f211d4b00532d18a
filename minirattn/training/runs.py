"""A run on disk: where it goes, what it continues from, and what it writes.

- :func:`resolve_checkpoint_dir` / :func:`run_folder`: ``checkpoint_dir="auto"`` becomes
  runs/<dataset>-<arch>[-N], never an earlier run's folder.
- :func:`resume_point`: the checkpoint a run continues from, or None; refuses another run's
  folder, a missing checkpoint and a checkpoint of other settings, saying what differs.
- :func:`restore_run`: puts that checkpoint's weights, optimiser state and history into a run.
- :func:`prepare_checkpoint_dir`: the folder is made, written to once, cleaned of temporaries.
- :func:`save_run`: one checkpoint (atomic, verified when read: checkpoint.py), the old ones
  pruned, ``metrics.json`` rewritten.
"""
from __future__ import annotations

import json
import os
import shutil

from .checkpoint import (CheckpointError, CheckpointWriteError, checkpoint_name,
                         latest_valid_checkpoint, list_checkpoints, prune_checkpoints,
                         remove_stale_temporaries, save_checkpoint)
from ..files import probe_folder, write_atomically
from .config import AUTO, RESUME_MAY_CHANGE, TrainConfig
from .trained import model_settings, section


def run_folder(base: str, resume: bool) -> str:
    """Where a run goes when ``checkpoint_dir="auto"``: ``base``, or ``base-2``, ``base-3``, ... so
    that a new run never overwrites an earlier one; with ``resume``, the newest of them that
    exists."""
    candidates = [base] + [f"{base}-{i}" for i in range(2, 1000)]
    if resume:
        existing = [c for c in candidates if os.path.isdir(c)]
        return existing[-1] if existing else base
    return next(c for c in candidates if not list_checkpoints(c))


def resolve_checkpoint_dir(config: TrainConfig) -> TrainConfig:
    """``config`` with ``checkpoint_dir="auto"`` replaced by the folder :func:`run_folder` picks
    (runs/<dataset>-<arch>[-N] under the working directory)."""
    if config.checkpoint_dir != AUTO:
        return config
    return config.replace(checkpoint_dir=run_folder(f"runs/{config.dataset}-{config.arch}",
                                                    bool(config.resume)))


def resume_point(config: TrainConfig, echo=print):
    """(path, arrays, meta, changed) of the checkpoint to continue from, or None for a new run;
    ``changed`` holds the settings that may change on resume and did ({name: (saved, now)}).

    Refuses a ``checkpoint_dir`` that holds an earlier run unless ``resume``; ``resume=True`` with
    nothing to continue; and a checkpoint trained with other settings of the run's identity
    (``iterations`` with the schedule it would change)."""
    folder = config.checkpoint_dir
    if not folder:
        return None
    if not config.resume:
        if list_checkpoints(folder):
            raise ValueError(f"{folder} already holds checkpoints of an earlier run; pass "
                             f"resume=True (--resume) to continue it, or choose another "
                             f"checkpoint_dir: nothing is overwritten")
        return None
    found = latest_valid_checkpoint(folder, warn=echo) if os.path.isdir(folder) else None
    if found is None:
        if config.resume == "auto":
            echo(f"nothing to resume in {folder}: starting a new run there")
            return None
        raise ValueError(f"nothing to resume in {folder}: it holds no readable checkpoint. Drop "
                         f"resume (--resume) to start a new run, or pass resume='auto' (--resume "
                         f"auto) to start one when there is nothing to continue")
    path, (arrays, meta) = found
    saved = meta.get("config") if isinstance(meta, dict) else None
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path} does not record the settings of a training run")
    check_same_run(config, path, saved, meta["iteration"])
    return path, arrays, meta, config.differences(saved, identity=False)


def check_same_run(config: TrainConfig, path: str, saved: dict, at: int) -> None:
    """Refuse to continue ``path`` (recorded settings ``saved``, at iteration ``at``) when it was
    trained with other settings of the run's identity, naming each; a changed ``iterations`` is
    shown with the learning-rate milestones it would move."""
    different = config.differences(saved)
    others = {k: v for k, v in different.items() if k != "iterations"}
    if others:
        listed = "; ".join(f"{k} {old!r} there, {new!r} now" for k, (old, new) in others.items())
        raise ValueError(f"cannot resume from {path}: it is another run ({listed}); only "
                         f"{', '.join(RESUME_MAY_CHANGE)} and where and how the run goes may "
                         f"change on resume. Choose another checkpoint_dir for this run")
    if "iterations" in different:
        (old, new) = different["iterations"]
        before, after = config.schedule(old), config.schedule()
        raise ValueError(
            f"cannot resume from {path} with iterations={new}: the run was set up for {old}, and "
            f"the learning-rate schedule would move its milestones from {before.milestones} to "
            f"{after.milestones} (lr {before(at):g} -> {after(at):g} at iteration {at}). Resume "
            f"with iterations={old}, or start a new run")


def restore_run(run, resume_from) -> None:
    """Load the checkpoint :func:`resume_point` found into ``run`` (weights, optimiser state,
    iteration, history) and record the resume, with what changed, in the run's record."""
    path, arrays, meta, changed = resume_from
    run.model.load_state_dict(section(arrays, "model"))
    run.model.load_run_state(section(arrays, "run"))
    run.optimizer.load_state_dict(section(arrays, "optim"))
    run.start, run.history, run.last_checkpoint = meta["iteration"], meta["history"], path
    saved_ranks = meta["config"].get("ranks", 1)
    if saved_ranks != run.parallel.ranks:
        changed = dict(changed, ranks=(saved_ranks, run.parallel.ranks))
    saved_threads = meta["config"].get("threads", 1)
    threads = run.parallel.thread_count(run.config.backend)
    if saved_threads != threads:                   # the same step to round-off; recorded
        changed = dict(changed, threads=(saved_threads, threads))
    run.record["resumes"] = list(meta["config"].get("resumes", [])) + [dict(
        iteration=run.start, checkpoint=os.path.basename(path),
        changed={k: list(v) for k, v in changed.items()})]
    run.say(f"resuming from {path} at iteration {run.start}"
            + "".join(f", {k} {a} -> {b}" for k, (a, b) in changed.items()))


def prepare_checkpoint_dir(config: TrainConfig, model, echo=print) -> None:
    """Before the first iteration: create the checkpoint folder and write a test file there, remove
    temporary files that interrupted writes left, and warn when the disk cannot hold the kept
    checkpoints. Raises :class:`CheckpointWriteError` naming the folder when it cannot be used."""
    folder = config.checkpoint_dir
    if not folder:
        return
    probe_folder(folder, f"checkpoint_dir {folder}", "; choose another checkpoint_dir",
                 CheckpointWriteError)
    for stale in remove_stale_temporaries(folder):
        echo(f"removed {stale}, left by an interrupted write")
    arrays = list(model.state_dict().values()) + model.parameters()      # + the velocities
    size = sum(int(a.nbytes) + 512 for a in arrays)             # 512: a .npz entry's headers
    need = (config.keep_checkpoints + 1) * size
    free = shutil.disk_usage(folder).free
    if free < need:
        echo(f"warning: {folder} has {free / 2**20:.2f} MiB free, but {config.keep_checkpoints} "
             f"checkpoints and the one being written take about {need / 2**20:.2f} MiB")


def run_record(config: TrainConfig, data, model) -> dict:
    """What checkpoints and metrics.json say of the run: its settings and what they gave, as
    JSON values (tuples become lists), so the record reads back equal to itself."""
    record = dict(config.to_dict(), num_classes=data.num_classes, parameters=model.num_parameters(),
                  flipped=data.flipped, classes=data.classes,
                  model=model_settings(config, data.num_classes, data.image_shape))
    return json.loads(json.dumps(record))


def save_run(config: TrainConfig, record: dict, model, optimizer, mean, history, iteration,
             last_good=None) -> str:
    """Write checkpoint ``iteration`` (model, optimiser, run state, mean image, record,
    history), prune the old ones and rewrite metrics.json; returns the checkpoint's path. A
    failed write (a full disk, a folder made read-only) raises :class:`CheckpointWriteError`
    naming the file, the cause and ``last_good``, the checkpoint that survives; no partial file
    is left."""
    folder = config.checkpoint_dir
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optim.{k}": v for k, v in optimizer.state_dict().items()})
    arrays.update({f"run.{k}": v for k, v in model.run_state().items()})   # batch norm's shifts
    arrays["data.mean"] = mean
    path = os.path.join(folder, checkpoint_name(iteration))
    try:
        save_checkpoint(path, arrays, dict(iteration=iteration, config=record, history=history))
        prune_checkpoints(folder, config.keep_checkpoints)
        write_metrics(os.path.join(folder, "metrics.json"), record, history)
    except OSError as exc:
        raise CheckpointWriteError(
            f"could not write {getattr(exc, 'filename', None) or path}: {exc.strerror or exc}. "
            f"The last good checkpoint is {last_good or '(none written yet)'}; free some space "
            f"or choose another checkpoint_dir, then resume") from exc
    return path


def write_metrics(path, record, history):
    """metrics.json, written atomically (files.py): a failed write leaves the old one."""
    write_atomically(path, json.dumps(dict(config=record, history=history), indent=1).encode())
