"""The training loop: the paper's recipe (Sec. 4.1) as a short loop with named parts.

One iteration: a seeded, augmented batch -> forward -> softmax cross-entropy -> backward ->
Nesterov SGD with the (scaled) step schedule. :func:`train` reads as that algorithm; the rest
are named parts usable alone: :func:`prepare_data`, :func:`build_model`, :func:`start_run` (set-up,
resume: runs.py), :func:`train_step` (the seam: ``train`` takes another ``step``) and the
extensions that run after every step (logging, evaluation, divergence, progress, checkpoints:
extensions.py; ``callbacks=`` adds your own). A trained model is loaded and asked for predictions
in trained.py.

On CuPy everything stays on the device; a training step makes no device sync and the loop reads
numbers back only when it logs (every ``log_every`` iterations) and evaluates.

Data-parallel (``distributed``): the run's :class:`~minirattn.distributed.DataParallel` holds
everything the ranks do differently: every rank takes its slice of the same global batch, the step
all-reduces the gradients, logging and evaluation sum over the ranks, and rank 0 alone decides
where the run goes, writes checkpoints and shows progress. An error on one rank ends every rank
(naming it); an error every rank meets alike is raised on each.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field

from .. import backend as B
from .. import distributed as D
from .. import functional as F
from ..data import BatchStream, kind, load_dataset
from .config import TrainConfig
from .extensions import MetricLog, default_extensions
from .noise import add_label_noise
from .optim import SGD, StepSchedule
from .runs import (prepare_checkpoint_dir, resolve_checkpoint_dir, restore_run, resume_point,
                   run_record)
from .trained import evaluate, rebuild_model, model_settings


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
    classes: list = field(default_factory=list)


def prepare_data(config: TrainConfig, echo=print) -> TrainData:
    """Load the data set, apply label noise (training split only), normalise as the data set's
    kind does (the per-pixel mean of the possibly shortened training split; folders: ImageNet's
    per-channel statistics; data/kinds.py), and make the seeded batch stream."""
    k = kind(config.dataset)
    if config.progress:
        echo(f"{k.verb} {config.dataset} ...")
    data = load_dataset(config.dataset, config.data_dir, config.download, n_train=config.n_train,
                        n_test=config.n_test, seed=config.seed, progress=config.progress,
                        image_size=config.image_size, workers=config.workers)
    y_train, flipped = data.y_train, ()
    if config.label_noise > 0:
        y_train, flipped = add_label_noise(
            y_train, config.label_noise, data.num_classes, config.seed
        )
    mean, std = k.normalization(data.x_train)
    stream = k.stream(data.x_train, y_train, mean, std, config.batch_size, seed=config.seed,
                      augment=config.augment)
    return TrainData(stream, data.x_test, data.y_test, mean, data.num_classes, data.image_shape,
                     len(y_train), len(flipped), std, list(data.classes))


def build_model(config: TrainConfig, data: TrainData):
    """The run's network on the run's backend, initialised from the run's seed."""
    settings = model_settings(config, data.num_classes, data.image_shape)
    return rebuild_model(settings, config.seed).to(config.backend)


def forward_backward(model, x, y, share=1.0):
    """Forward, softmax cross-entropy, backward into freshly zeroed gradients. ``share`` (n / B)
    scales the loss and its gradient where ``x, y`` are one slice of a batch of B (a rank's or a
    thread's), so that the slices' gradients sum to the batch's. Returns (loss, number correct)."""
    logits = model(x)
    loss, dlogits = F.softmax_cross_entropy(logits, y, validate=False)
    if share != 1.0:
        dlogits *= share
        loss = loss * share
    model.zero_grad()
    model.backward(dlogits)
    return loss, (logits.argmax(axis=1) == y).sum()


def train_step(model, optimizer, x, y, lr, comm=None, global_batch=None, threads=None):
    """One iteration on a batch already on the model's device: forward, softmax cross-entropy,
    backward, optimiser step. Returns (loss, number correct), both still on the device.

    Data-parallel (``comm`` of more than one rank): ``x, y`` are this rank's shard of a global
    batch of ``global_batch``; the loss gradient is scaled by the shard's share n / B so that the
    ranks' gradients sum to the global mean loss's, and the flat gradient buffers are summed over
    the ranks before the update. The loss returned is the shard's share of the global mean.
    ``threads`` (a :class:`~minirattn.distributed.BatchThreads` of ``model``): the batch is split
    over its threads the same way inside this process."""
    if threads is not None and threads.size > 1:
        parts = threads.run(forward_backward, x, y)
        loss, correct = parts[0]
        for part_loss, part_correct in parts[1:]:
            loss, correct = loss + part_loss, correct + part_correct
    else:
        distributed = comm is not None and comm.size > 1
        share = len(y) / global_batch if distributed else 1.0
        loss, correct = forward_backward(model, x, y, share)
        if distributed:
            D.allreduce_gradients(model, comm)
    optimizer.step(lr)
    return loss, correct


# ---- the run --------------------------------------------------------------------------------
@dataclass
class Run:
    """Everything a run holds while it trains; the extensions read and write it."""
    config: TrainConfig
    parallel: D.DataParallel
    data: TrainData
    model: object
    optimizer: SGD
    schedule: StepSchedule
    record: dict                         # what checkpoints and metrics.json say of the run
    say: object = print                  # rank 0's echo; the other ranks' says nothing
    history: list = field(default_factory=list)
    start: int = 0                       # the iteration it starts (or resumes) at
    last_checkpoint: str | None = None
    test_acc: float | None = None
    log: MetricLog | None = None
    iteration: int = 0                   # iterations done, after the step
    lr: float = 0.0
    row: dict | None = None              # this iteration's history row when it logged
    row_steps: int = 0                   # how many steps that row sums
    evaluated: bool = False              # whether this iteration is tested
    stop: bool = False                   # a callback sets it to end the run after this iteration

    def batch(self, it: int):
        """This rank's slice of global batch ``it``, on the device in the run's dtype (a folder
        stream decodes only that slice)."""
        xb, yb = self.data.stream.batch(it, *self.parallel.shard(self.config.batch_size))
        xb = xb.astype(self.config.dtype, copy=False)
        return B.to_device(xb, self.config.backend), B.to_device(yb, self.config.backend)

    def test(self):
        """(accuracy, mean loss) on the test split, in evaluation mode."""
        self.parallel.before_test(self.model)
        return evaluate(self.model, self.data.x_test, self.data.y_test, self.data.mean,
                        comm=self.parallel.comm, std=self.data.std)

    def result(self) -> TrainResult:
        folder = self.config.checkpoint_dir
        return TrainResult(self.history, self.test_acc, self.last_checkpoint,
                           os.path.join(folder, "metrics.json") if folder else None,
                           self.record, self.model)


def _silent(*args, **kwargs):
    pass


def _where(config: TrainConfig, say):
    """Where the run goes and what it continues from (rank 0 decides for every rank)."""
    config = resolve_checkpoint_dir(config)
    return config, resume_point(config, say)


def start_run(config: TrainConfig, parallel: D.DataParallel, echo=print) -> Run:
    """Everything before the first step: the ranks checked, the run's folder and what it resumes,
    the data, the network, the optimiser, the schedule, and the first line of progress."""
    say = echo if parallel.lead else _silent
    parallel.check_setup(config.backend, config.dtype)
    config, resume_from = parallel.collective(_where, config, say)
    data = prepare_data(config, say)
    model = build_model(config, data)
    parallel.collective(prepare_checkpoint_dir, config, model, say)
    optimizer = SGD(model, lr=config.lr, momentum=config.momentum,
                    weight_decay=config.weight_decay)
    run = Run(config, parallel, data, model, optimizer, config.schedule(),
              run_record(config, data, model), say)
    if resume_from is not None:
        restore_run(run, resume_from)
    run.record["ranks"] = parallel.ranks
    parallel.prepare(model)
    run.record["threads"] = parallel.thread_count(config.backend)
    if config.progress:
        say(f"{config.arch} ({run.record['parameters']:,} parameters) on {config.dataset}: "
            f"{data.n_train} training and {len(data.y_test)} test images, {config.iterations} "
            f"iterations of batch {config.batch_size}, backend {config.backend}"
            f"{parallel.describe()}")
    elapsed = run.history[-1]["elapsed_s"] if run.history else 0.0
    run.log = MetricLog(config.backend, run.history, elapsed, parallel.comm)
    run.test_acc = run.history[-1].get("test_acc") if run.history else None
    return run


def loop(run: Run, step, extensions) -> None:
    """The paper's algorithm: for each iteration a batch, a step at the schedule's learning rate,
    then the extensions (docs/architecture.md)."""
    config = run.config
    try:
        for it in range(run.start, config.iterations):
            x, y = run.batch(it)
            run.lr = run.schedule(it)
            loss, correct = step(run.model, run.optimizer, x, y, run.lr,
                                 **run.parallel.step_kwargs())
            run.log.add(loss, correct, len(y))
            run.iteration = it + 1
            run.evaluated = (run.iteration % config.eval_every == 0
                             or run.iteration == config.iterations)
            for extension in extensions:
                extension(run)
            if run.evaluated:
                run.log.restart_clock()
            if run.stop:
                break
    finally:
        for extension in extensions:
            if hasattr(extension, "close"):
                extension.close(run)
        run.data.stream.close()   # a folder stream's decoding threads, and the batch past the end


def _takes_threads(step) -> bool:
    """Whether ``step`` accepts ``threads=`` (by name or through ``**kwargs``)."""
    try:
        params = inspect.signature(step).parameters.values()
    except (TypeError, ValueError):                  # pragma: no cover - a builtin: assume so
        return True
    return any(p.name == "threads" or p.kind is p.VAR_KEYWORD for p in params)


def train(config: TrainConfig | None = None, *, step=train_step, echo=print, on_evaluate=None,
          callbacks=(), **settings) -> TrainResult:
    """Train a Residual Attention Network: ``config`` (a :class:`TrainConfig`), or its fields as
    ``settings`` (with a config: changes to it), from its start or its last checkpoint.

    ``step(model, optimizer, x, y, lr)`` makes one iteration (default :func:`train_step`) and
    returns (loss, number correct); when data-parallel it is also given ``comm=`` and
    ``global_batch=``, and in one process with several threads ``threads=`` (a step that takes
    no ``threads`` or ``**kwargs`` runs the run on one thread).
    ``on_evaluate(model, iteration, mean_image)``, if given, runs after every evaluation and
    returns a dict of JSON values added to that history row (e.g. Fig. 4's feature response).
    ``callbacks``: callables ``cb(run)`` called after every iteration, after the run's own parts
    (extensions.py). Left unset, a folder data set takes the paper's ImageNet
    batch and length (data/kinds.py).

    Data-parallel runs (``config.distributed``) end every rank when one fails: an error only
    one rank meets is reported with its rank and the job is aborted (``MPI_Abort``)."""
    if config is None:
        config = TrainConfig.from_settings(**settings)
    elif settings:
        config = config.replace(**settings)
    if config.threads != 1 and not _takes_threads(step):
        config = config.replace(threads=1)          # a step of five arguments: one thread
    parallel = D.DataParallel.for_run(config.distributed, config.batch_size,
                                      config.sync_batchnorm, config.threads)
    try:
        run = start_run(config, parallel, echo)
        loop(run, step, default_extensions(run, on_evaluate) + list(callbacks))
        if run.test_acc is None:   # resumed at the end: nothing left to train
            run.test_acc, _ = run.test()
        return run.result()
    except BaseException as exc:
        parallel.fail(exc)                 # an error only this rank met ends every rank
        raise


def train_cifar(*, echo=print, **settings) -> TrainResult:
    """Train a Residual Attention Network with the paper's recipe (Sec. 4.1): :func:`train` by
    the name practitioners know (it trains every data set, folders of images too).

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
    return train(echo=echo, **settings)
