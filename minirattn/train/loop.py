"""The training loop and ``train_cifar()``: the paper's recipe on any of the data sets.

One iteration: a seeded, augmented batch -> forward -> softmax cross-entropy -> backward ->
Nesterov SGD with the (scaled) step schedule. The loop is made of small named parts, each
usable alone: :func:`resolve_checkpoint_dir`, :func:`resume_point`, :func:`prepare_data`,
:func:`build_model`, :func:`prepare_checkpoint_dir`, :func:`train_step` (the seam: :func:`train`
takes another ``step``, e.g. a data-parallel one), :class:`MetricLog` (logging), :func:`evaluate`,
:func:`save_run` (checkpoints and metrics).

On CuPy everything stays on the device; a training step makes no device sync and the loop reads
numbers back only when it logs (every ``log_every`` iterations) and evaluates.

Data-parallel (``distributed``; minirattn.distributed): every rank takes its slice of the same
global batch, the step all-reduces the gradients, logging and evaluation sum over the ranks, and
rank 0 alone decides where the run goes, writes checkpoints and shows progress. An error on one
rank ends every rank (naming it); an error every rank meets alike is raised on each.

A NaN or infinite training loss, test loss or weight stops training with a message naming the last
good checkpoint; checkpoints are only written from states whose test loss and weights are finite.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field

from .. import backend as B
from .. import distributed as D
from .. import functional as F
from ..checks import check_positive_int
from ..data import (BatchStream, FolderStream, channel_stats, eval_batches, load_dataset,
                    normalize, pixel_mean)
from ..models import build
from .checkpoint import (CheckpointError, CheckpointWriteError, checkpoint_name,
                         latest_valid_checkpoint, list_checkpoints, load_checkpoint,
                         prune_checkpoints, remove_stale_temporaries, save_checkpoint)
from .config import AUTO, RESUME_MAY_CHANGE, TrainConfig
from .noise import add_label_noise
from .optim import SGD, StepSchedule
from .optim import IMAGENET_BATCH, IMAGENET_ITERATIONS


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite (seen by every rank alike: the sums are global)."""

    all_ranks = True


@dataclass
class TrainResult:
    history: list                       # one dict per log step: iteration, lr, loss, train_acc, ...
    final_test_accuracy: float
    checkpoint_path: str | None
    metrics_path: str | None
    config: dict
    model: object = field(repr=False, default=None)

    @property
    def final_test_error(self) -> float:
        return 1.0 - self.final_test_accuracy

    def summary(self) -> str:
        last = self.history[-1] if self.history else {}
        ckpt = f", checkpoint {self.checkpoint_path}" if self.checkpoint_path else ""
        return (f"{self.config['arch']} on {self.config['dataset']}: {last.get('iteration', 0)} "
                f"iterations, train loss {last.get('loss', float('nan')):.3f}, test accuracy "
                f"{100 * self.final_test_accuracy:.2f}% (error "
                f"{100 * self.final_test_error:.2f}%), "
                f"{last.get('elapsed_s', 0):.0f} s{ckpt}")


# ---- the parts -----------------------------------------------------------------------------
@dataclass
class TrainData:
    """What a run trains and tests on: a seeded batch stream, the test split, the mean image
    (folders of images: per-channel mean and ``std``)."""
    stream: BatchStream
    x_test: object
    y_test: object
    mean: object
    num_classes: int
    image_shape: tuple
    n_train: int
    flipped: int
    std: object = None


def prepare_data(config: TrainConfig, echo=print) -> TrainData:
    """Load the data set, apply label noise (training split only), compute the per-pixel mean
    of the (possibly shortened) training split, and make the seeded batch stream."""
    if config.progress:
        echo(f"{'generating' if config.dataset == 'shapes' else 'loading'} {config.dataset} ...")
    data = load_dataset(config.dataset, config.data_dir, config.download, n_train=config.n_train,
                        n_test=config.n_test, seed=config.seed, progress=config.progress,
                        image_size=config.image_size, workers=config.workers)
    y_train, flipped = data.y_train, ()
    if config.label_noise > 0:
        y_train, flipped = add_label_noise(
            y_train, config.label_noise, data.num_classes, config.seed
        )
    if config.dataset == "folder":
        mean, std = channel_stats()
        stream = FolderStream(data.x_train, y_train, mean, std, config.batch_size,
                              seed=config.seed, augment_data=config.augment)
    else:
        mean, std = pixel_mean(data.x_train), None
        stream = BatchStream(data.x_train, y_train, mean, config.batch_size, seed=config.seed,
                             augment_data=config.augment)
    return TrainData(stream, data.x_test, data.y_test, mean, data.num_classes, data.image_shape,
                     len(y_train), len(flipped), std)


def model_settings(config: TrainConfig, num_classes: int, image_shape) -> dict:
    """What :func:`rebuild_model` needs to build the run's network again (saved in checkpoints)."""
    C, H, _ = image_shape
    return dict(arch=config.arch, num_classes=num_classes, attention=config.attention,
                learning=config.learning, mask=config.mask, dtype=config.dtype,
                spec={"in_channels": C, "input_size": H, **config.model_kwargs})


def rebuild_model(settings: dict, seed: int = 0):
    """The network :func:`model_settings` describes, freshly initialised from ``seed``."""
    return build(settings["arch"], num_classes=settings["num_classes"],
                 attention=settings["attention"], learning=settings["learning"],
                 mask=settings["mask"], seed=seed, dtype=settings.get("dtype", "float32"),
                 **settings["spec"])


def build_model(config: TrainConfig, data: TrainData):
    """The run's network on the run's backend, initialised from the run's seed."""
    settings = model_settings(config, data.num_classes, data.image_shape)
    return rebuild_model(settings, config.seed).to(config.backend)


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
    different = config.differences(saved)
    others = {k: v for k, v in different.items() if k != "iterations"}
    if others:
        listed = "; ".join(f"{k} {old!r} there, {new!r} now" for k, (old, new) in others.items())
        raise ValueError(f"cannot resume from {path}: it is another run ({listed}); only "
                         f"{', '.join(RESUME_MAY_CHANGE)} and where and how the run goes may "
                         f"change on resume. Choose another checkpoint_dir for this run")
    if "iterations" in different:
        (old, new), at = different["iterations"], meta["iteration"]
        before = StepSchedule(config.lr, old, recipe=config.recipe)
        after = StepSchedule(config.lr, new, recipe=config.recipe)
        raise ValueError(
            f"cannot resume from {path} with iterations={new}: the run was set up for {old}, and "
            f"the learning-rate schedule would move its milestones from {before.milestones} to "
            f"{after.milestones} (lr {before(at):g} -> {after(at):g} at iteration {at}). Resume "
            f"with iterations={old}, or start a new run")
    return path, arrays, meta, config.differences(saved, identity=False)


def prepare_checkpoint_dir(config: TrainConfig, model, echo=print) -> None:
    """Before the first iteration: create the checkpoint folder and write a test file there, remove
    temporary files that interrupted writes left, and warn when the disk cannot hold the kept
    checkpoints. Raises :class:`CheckpointWriteError` naming the folder when it cannot be used."""
    folder = config.checkpoint_dir
    if not folder:
        return
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise CheckpointWriteError(f"checkpoint_dir {folder} is a file, not a folder: choose "
                                   f"another checkpoint_dir")
    probe = os.path.join(folder, ".write-test")
    try:
        os.makedirs(folder, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"minirattn")
        os.remove(probe)
    except OSError as exc:
        raise CheckpointWriteError(f"cannot write in checkpoint_dir {folder}: "
                                   f"{exc.strerror or exc}; choose another checkpoint_dir") from exc
    for stale in remove_stale_temporaries(folder):
        echo(f"removed {stale}, left by an interrupted write")
    arrays = list(model.state_dict().values()) + model.parameters()      # + the velocities
    size = sum(int(a.nbytes) + 512 for a in arrays)             # 512: a .npz entry's headers
    need = (config.keep_checkpoints + 1) * size
    free = shutil.disk_usage(folder).free
    if free < need:
        echo(f"warning: {folder} has {free / 2**20:.2f} MiB free, but {config.keep_checkpoints} "
             f"checkpoints and the one being written take about {need / 2**20:.2f} MiB")


def train_step(model, optimizer, x, y, lr, comm=None, global_batch=None):
    """One iteration on a batch already on the model's device: forward, softmax cross-entropy,
    backward, optimiser step. Returns (loss, number correct), both still on the device.

    Data-parallel (``comm`` of more than one rank): ``x, y`` are this rank's shard of a global
    batch of ``global_batch``; the loss gradient is scaled by the shard's share n / B so that the
    ranks' gradients sum to the global mean loss's, and the flat gradient buffers are summed over
    the ranks before the update. The loss returned is the shard's share of the global mean."""
    logits = model(x)
    loss, dlogits = F.softmax_cross_entropy(logits, y, validate=False)
    distributed = comm is not None and comm.size > 1
    if distributed:
        share = len(y) / global_batch
        dlogits *= share
        loss = loss * share
    model.zero_grad()
    model.backward(dlogits)
    if distributed:
        D.allreduce_gradients(model, comm)
    optimizer.step(lr)
    return loss, (logits.argmax(axis=1) == y).sum()


class MetricLog:
    """Sums loss and accuracy on the device between log steps and turns them into history rows
    (one read-back per row); says when the loss is not finite."""

    def __init__(self, backend: str, history: list, elapsed_before: float = 0.0,
                 comm: D.Communicator | None = None):
        xp = B.get(backend)
        self.comm = comm or D.Communicator()
        self.loss = xp.zeros((), dtype=xp.float32)
        self.correct = xp.zeros((), dtype=xp.int64)
        self.seen, self.steps, self.history = 0, 0, history
        self.t_log = time.perf_counter()
        self.t_start = self.t_log - elapsed_before

    def add(self, loss, correct, n):
        self.loss += loss
        self.correct += correct
        self.seen += n
        self.steps += 1

    def row(self, iteration: int, lr: float) -> dict:
        """The history row for the steps since the last row (mean loss, accuracy, images/s,
        elapsed time); resets the sums. The caller checks that the loss is finite."""
        loss, correct, seen = self.comm.sum_numbers([self.loss, self.correct, self.seen])
        now = time.perf_counter()
        row = dict(iteration=iteration, lr=lr, loss=loss / self.steps, train_acc=correct / seen,
                   images_per_s=seen / (now - self.t_log), elapsed_s=now - self.t_start)
        self.loss[...] = 0
        self.correct[...] = 0
        self.seen, self.steps, self.t_log = 0, 0, now
        return row

    def restart_clock(self):
        """Evaluation time is not training speed."""
        self.t_log = time.perf_counter()


def evaluate(model, x_uint8, y, mean, batch_size=500, comm=None, std=None):
    """(accuracy, mean loss) of ``model`` in eval mode on uint8 images (or a folder split); with
    a ``comm`` of several ranks each evaluates its slice and the sums are added up."""
    name = model.backend
    correct, loss_sum = 0, 0.0
    n = len(y)
    if comm is not None and comm.size > 1:
        lo, hi = D.shard(n, comm.rank, comm.size)
        x_uint8, y = x_uint8[lo:hi], y[lo:hi]
    with model.mode(False):
        for xb, yb in eval_batches(x_uint8, y, mean, batch_size, std):
            xd, yd = B.to_device(xb.astype(model.dtype, copy=False), name), B.to_device(yb, name)
            logits = model(xd)
            loss, _ = F.softmax_cross_entropy(logits, yd, validate=False)
            correct += int((logits.argmax(axis=1) == yd).sum())
            loss_sum += float(loss) * len(yb)
    if comm is not None:
        correct, loss_sum = comm.sum_numbers([correct, loss_sum])
    return correct / n, loss_sum / n


def run_record(config: TrainConfig, data: TrainData, model) -> dict:
    """What checkpoints and metrics.json say of the run: its settings and what they gave, as
    JSON values (tuples become lists), so the record reads back equal to itself."""
    record = dict(config.to_dict(), num_classes=data.num_classes, parameters=model.num_parameters(),
                  flipped=data.flipped,
                  model=model_settings(config, data.num_classes, data.image_shape))
    return json.loads(json.dumps(record))


def weights_finite(model) -> bool:
    """Whether every parameter of ``model`` is finite (one read-back)."""
    params = model.parameters()
    xp = B.xp_of(params[0])
    return bool(xp.isfinite(xp.stack([xp.abs(p).sum() for p in params]).sum()))


def save_run(config: TrainConfig, record: dict, model, optimizer, mean, history, iteration,
             last_good=None) -> str:
    """Write checkpoint ``iteration`` (model, optimiser, mean image, record, history), prune the
    old ones and rewrite metrics.json; returns the checkpoint's path. A failed write (a full disk,
    a folder made read-only) raises :class:`CheckpointWriteError` naming the file, the cause and
    ``last_good``, the checkpoint that survives; no partial file is left."""
    folder = config.checkpoint_dir
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optim.{k}": v for k, v in optimizer.state_dict().items()})
    arrays["data.mean"] = mean
    path = os.path.join(folder, checkpoint_name(iteration))
    try:
        save_checkpoint(path, arrays, dict(iteration=iteration, config=record, history=history))
        prune_checkpoints(folder, config.keep_checkpoints)
        _write_metrics(os.path.join(folder, "metrics.json"), record, history)
    except OSError as exc:
        raise CheckpointWriteError(
            f"could not write {getattr(exc, 'filename', None) or path}: {exc.strerror or exc}. "
            f"The last good checkpoint is {last_good or '(none written yet)'}; free some space "
            f"or choose another checkpoint_dir, then resume") from exc
    return path


def _progress(total, initial, enabled):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="it", dynamic_ncols=True, leave=True)


def _show(bar, config, row, test_acc, echo):
    if bar is not None:
        bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['train_acc']:.3f}",
                        img_s=f"{row['images_per_s']:.0f}",
                        **({"test": f"{test_acc:.3f}"} if test_acc is not None else {}))
    elif config.progress:
        echo(f"iter {row['iteration']}/{config.iterations} loss {row['loss']:.3f} acc "
             f"{row['train_acc']:.3f} {row['images_per_s']:.0f} img/s"
             + (f" test {row['test_acc']:.3f}" if "test_acc" in row else ""))


# ---- the loop ------------------------------------------------------------------------------
def train(config: TrainConfig, *, step=train_step, echo=print, on_evaluate=None) -> TrainResult:
    """Run ``config`` from its start or its last checkpoint; ``step(model, optimizer, x, y, lr)``
    makes one iteration (default :func:`train_step`) and returns (loss, number correct); when
    data-parallel it is also given ``comm=`` and ``global_batch=``. ``on_evaluate(model,
    iteration, mean_image)``, if given, runs after every evaluation and returns a dict of
    JSON values added to that history row (e.g. Fig. 4's feature response).

    Data-parallel runs (``config.distributed``) end every rank when one fails: an error only
    one rank meets is reported with its rank and the job is aborted (``MPI_Abort``)."""
    if config.distributed is False and D.launched_ranks() > 1:
        raise ValueError(f"this process is one of {D.launched_ranks()} ranks a launcher started, "
                         f"but distributed=False: every rank would train the same run alone and "
                         f"write the same checkpoints. Pass distributed=True or 'auto' "
                         f"(--distributed auto), or run without mpiexec")
    comm = D.communicator(config.distributed)
    try:
        return _train(config, comm, step, echo, on_evaluate)
    except BaseException as exc:
        if comm.size > 1 and not getattr(exc, "all_ranks", False):
            comm.fail(exc)                                 # ends every rank, this one too
        raise


def _start(config: TrainConfig, echo):
    """Where the run goes and what it continues from (rank 0 decides for every rank)."""
    config = resolve_checkpoint_dir(config)
    return config, resume_point(config, echo)


def _train(config: TrainConfig, comm, step, echo, on_evaluate=None) -> TrainResult:
    lead = comm.rank == 0
    say = echo if lead else (lambda *args, **kwargs: None)
    D.check_setup(comm, batch_size=config.batch_size, backend=config.backend,
                  dtype=config.dtype)
    D.pick_device(comm, config.backend)
    config, resume_from = comm.collective(_start, config, say)
    data = prepare_data(config, say)
    model = build_model(config, data)
    comm.collective(prepare_checkpoint_dir, config, model, say)
    record = run_record(config, data, model)
    optimizer = SGD(model, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    schedule = StepSchedule(config.lr, config.iterations, recipe=config.recipe)
    history, start, last_ckpt = [], 0, None
    if resume_from is not None:
        last_ckpt, arrays, meta, changed = resume_from
        model.load_state_dict(_section(arrays, "model"))
        optimizer.load_state_dict(_section(arrays, "optim"))
        start, history = meta["iteration"], meta["history"]
        saved_ranks = meta["config"].get("ranks", 1)
        if saved_ranks != comm.size:
            changed = dict(changed, ranks=(saved_ranks, comm.size))
        record["resumes"] = list(meta["config"].get("resumes", [])) + [dict(
            iteration=start, checkpoint=os.path.basename(last_ckpt),
            changed={k: list(v) for k, v in changed.items()})]
        say(f"resuming from {last_ckpt} at iteration {start}"
            + "".join(f", {k} {a} -> {b}" for k, (a, b) in changed.items()))
    record["ranks"] = comm.size
    extra = {}
    if comm.size > 1:
        D.sync_batchnorm(model, comm, config.sync_batchnorm)
        D.broadcast_model(model, comm)
        extra = dict(comm=comm, global_batch=config.batch_size)
    if config.progress:
        ranks = (f" on {comm.size} ranks ({config.batch_size // comm.size} images each, batch "
                 f"norm {'synchronized' if config.sync_batchnorm else 'per rank'}; "
                 f"{D.describe_ranks(comm)})" if comm.size > 1 else "")
        say(f"{config.arch} ({record['parameters']:,} parameters) on {config.dataset}: "
            f"{data.n_train} training and {len(data.y_test)} test images, {config.iterations} "
            f"iterations of batch {config.batch_size}, backend {config.backend}{ranks}")
    log = MetricLog(config.backend, history, history[-1]["elapsed_s"] if history else 0.0, comm)
    test_acc = history[-1].get("test_acc") if history else None
    bar = _progress(config.iterations, start, config.progress and lead)

    def diverged(what, lr):
        return TrainingDiverged(
            f"{what} (lr {lr}); training stopped. The last good checkpoint is "
            f"{last_ckpt or '(none written yet)'}: resume from it with a lower lr "
            f"(resume=True, lr=...; --resume --lr ...).")

    def test():
        if comm.size > 1 and not config.sync_batchnorm:
            D.broadcast_model(model, comm)                 # rank 0's running statistics
        return evaluate(model, data.x_test, data.y_test, data.mean, comm=comm, std=data.std)
    try:
        for it in range(start, config.iterations):
            # this rank's slice of global batch it (a folder stream decodes only that slice)
            xb, yb = data.stream.batch(it, *D.shard(config.batch_size, comm.rank, comm.size))
            lr = schedule(it)
            xb = xb.astype(config.dtype, copy=False)
            loss, correct = step(model, optimizer, B.to_device(xb, config.backend),
                                 B.to_device(yb, config.backend), lr, **extra)
            log.add(loss, correct, len(yb))
            done = it + 1
            evaluate_now = done % config.eval_every == 0 or done == config.iterations
            if done % config.log_every == 0 or evaluate_now:
                steps = log.steps
                row = log.row(done, lr)                          # the one read-back
                if not math.isfinite(row["loss"]):
                    raise diverged(f"the training loss became {row['loss']} between iterations "
                                   f"{done - steps} and {done}", lr)
                if evaluate_now:
                    test_acc, test_loss = test()
                    finite_weights = weights_finite(model)
                    if not (math.isfinite(test_loss) and finite_weights):
                        raise diverged(f"the test loss became {test_loss} at iteration {done} "
                                       f"(weights finite: {finite_weights})", lr)
                    D.check_same_weights(model, comm, done)
                    row.update(test_acc=test_acc, test_loss=test_loss)
                    if on_evaluate is not None:
                        row.update(on_evaluate(model, done, data.mean) or {})
                    log.restart_clock()
                history.append(row)
                if lead:
                    _show(bar, config, row, test_acc, echo)
                if evaluate_now and config.checkpoint_dir:
                    last_ckpt = comm.collective(save_run, config, record, model, optimizer,
                                                data.mean, history, done, last_good=last_ckpt)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        data.stream.close()     # a folder stream's decoding threads, and the batch past the end
    if test_acc is None:   # resumed at the end: nothing left to train
        test_acc, _ = test()
    folder = config.checkpoint_dir
    metrics_path = os.path.join(folder, "metrics.json") if folder else None
    return TrainResult(history, test_acc, last_ckpt, metrics_path, record, model)


def train_cifar(*, echo=print, **settings) -> TrainResult:
    """Train a Residual Attention Network with the paper's recipe (Sec. 4.1).

    ``settings`` are the fields of :class:`TrainConfig` (validated before anything is loaded);
    its defaults are the paper's CIFAR recipe: Attention-92 on CIFAR-10, Nesterov SGD, momentum
    0.9, weight decay 1e-4, batch 64, LR 0.1 divided by 10 at 40% and 60% of ``iterations``
    (64k and 96k of 160k), augmentation by zero-padding 4, random crop and horizontal flip,
    per-pixel mean subtraction. With ``dataset="folder"`` the paper's ImageNet recipe is the
    default instead: batch 256, 530k iterations, LR divided by 10 at 200k and 400k (scaled),
    scale and aspect-ratio augmentation (data/folder.py). Returns a :class:`TrainResult`;
    writes checkpoints and ``metrics.json`` to ``checkpoint_dir``: by default
    runs/<dataset>-<arch>[-N] under the working directory, None keeps nothing.
    """
    if settings.get("dataset") == "folder":
        settings.setdefault("iterations", IMAGENET_ITERATIONS)
        settings.setdefault("batch_size", IMAGENET_BATCH)
    return train(TrainConfig(**settings), echo=echo)


def _section(arrays, name):
    """The ``name.``-prefixed entries of a checkpoint's arrays, with the prefix removed."""
    prefix = name + "."
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def _write_metrics(path, record, history):
    """metrics.json through a temporary file and a rename; the temporary file never outlives a
    failed write."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(dict(config=record, history=history), f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# ---- after training ------------------------------------------------------------------------
def load_trained(path: str, backend: str = "numpy"):
    """Rebuild the model saved in checkpoint ``path``; returns (model, mean, meta)."""
    B.get(backend)                                        # BackendError before any reading
    arrays, meta = load_checkpoint(path)
    try:
        cfg = meta["config"]
        settings = cfg.get("model") or dict(              # checkpoints written before "model"
            arch=cfg["arch"], num_classes=cfg["num_classes"], attention=cfg["attention"],
            learning=cfg["learning"], mask=cfg["mask"], spec=cfg["model_kwargs"])
        model = rebuild_model(settings)
        model.load_state_dict(_section(arrays, "model"))
        mean = arrays["data.mean"]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path} does not hold a model minirattn can rebuild "
                              f"({type(exc).__name__}: {exc})") from exc
    return model.to(backend), mean, meta


def load_test_split(meta: dict, data_dir: str | None = None, n_test=None):
    """The test split of the run a checkpoint's ``meta`` describes, through the same data entry
    point training used (so ``shapes`` gives the same images); the first ``n_test`` when given."""
    cfg = meta["config"]
    if n_test is not None:
        check_positive_int("n_test", n_test)
    if cfg["dataset"] == "folder":                 # a folder split decodes when sliced: thin it
        return load_dataset("folder", data_dir, n_test=n_test or cfg.get("n_test"),
                            need_train=False, image_size=cfg.get("image_size"))
    data = load_dataset(cfg["dataset"], data_dir, n_test=cfg.get("n_test"), seed=cfg["seed"],
                        need_train=False)
    if n_test:
        data.x_test, data.y_test = data.x_test[:n_test], data.y_test[:n_test]
    return data


def channel_std(meta: dict):
    """The per-channel std a run's images were divided by (folders of images), else None."""
    return channel_stats()[1] if meta["config"].get("dataset") == "folder" else None


def evaluate_checkpoint(
    path: str, data_dir: str | None = None, backend: str = "numpy", n_test=None
):
    """Test accuracy of a saved model on its data set's test split."""
    model, mean, meta = load_trained(path, backend)
    data = load_test_split(meta, data_dir, n_test)
    acc, loss = evaluate(model, data.x_test, data.y_test, mean, std=channel_std(meta))
    cfg = meta["config"]
    return dict(accuracy=acc, error=1 - acc, loss=loss, iteration=meta["iteration"],
                n_test=len(data.y_test), arch=cfg["arch"], dataset=cfg["dataset"])


def predict(model, x_uint8, mean, std=None):
    """(normalised images, predicted classes) of ``model`` in eval mode, on the host."""
    x = normalize(x_uint8, mean, std)
    with model.mode(False):
        xd = B.to_device(x.astype(model.dtype, copy=False), model.backend)
        preds = B.to_numpy(model(xd).argmax(axis=1))
    return x, preds
