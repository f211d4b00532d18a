"""The parts of a run around the step, one job each: called after every iteration with the
:class:`~minirattn.training.loop.Run`, in this order (docs/architecture.md):

1. :class:`LogRow` -- on log steps, the mean loss, accuracy and images/s since the last row
   become a history row (the run's one read-back from the device).
2. :class:`Evaluate` -- on evaluation steps, test accuracy and loss in evaluation mode, and the
   ranks' weights compared.
3. :class:`DivergenceGuard` -- a non-finite training loss, test loss or weight stops the run,
   naming the last good checkpoint.
4. :class:`AfterEvaluate` -- a user's ``on_evaluate(model, iteration, mean)`` adds its entries
   to the row (e.g. Fig. 4's feature response).
5. :class:`Progress` -- the progress bar (tqdm) or one line per row, on rank 0.
6. :class:`Checkpoints` -- on evaluation steps, a checkpoint and metrics.json (rank 0 writes).

A callback of your own is any callable ``cb(run)``; ``train(..., callbacks=[cb])`` calls it after
these. ``run.row`` is this iteration's history row when it logged (else None), ``run.evaluated``
says whether it was tested; setting ``run.stop`` ends the run after this iteration;
``close(run)``, if a callback has it, runs when the loop ends.
"""
from __future__ import annotations

import math
import time

from .. import backend as B
from .. import distributed as D
from .runs import save_run


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite (seen by every rank alike: the sums are global)."""

    all_ranks = True


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
        """Evaluation and checkpoints are not training speed."""
        self.t_log = time.perf_counter()


class LogRow:
    """On log steps (every ``log_every`` iterations, and every evaluation step) the row of the
    steps since the last one joins the history."""

    def __call__(self, run):
        run.row = None
        if run.iteration % run.config.log_every == 0 or run.evaluated:
            run.row_steps = run.log.steps
            run.row = run.log.row(run.iteration, run.lr)
            run.history.append(run.row)


class Evaluate:
    """On evaluation steps: test accuracy and loss, and the ranks' weights still identical."""

    def __call__(self, run):
        if run.evaluated:
            run.test_acc, test_loss = run.test()
            run.row.update(test_acc=run.test_acc, test_loss=test_loss)
            run.parallel.check_same_weights(run.model, run.iteration)


class DivergenceGuard:
    """Stops the run when the training loss, the test loss or a weight is not finite; nothing is
    saved from such a state."""

    def __call__(self, run):
        row = run.row
        if row is None:
            return
        if not math.isfinite(row["loss"]):
            raise self.diverged(run, f"the training loss became {row['loss']} between iterations "
                                     f"{run.iteration - run.row_steps} and {run.iteration}")
        if run.evaluated:
            finite_weights = weights_finite(run.model)
            if not (math.isfinite(row["test_loss"]) and finite_weights):
                raise self.diverged(run, f"the test loss became {row['test_loss']} at iteration "
                                         f"{run.iteration} (weights finite: {finite_weights})")

    @staticmethod
    def diverged(run, what):
        return TrainingDiverged(
            f"{what} (lr {run.lr}); training stopped. The last good checkpoint is "
            f"{run.last_checkpoint or '(none written yet)'}: resume from it with a lower lr "
            f"(resume=True, lr=...; --resume --lr ...).")


def weights_finite(model) -> bool:
    """Whether every parameter of ``model`` is finite (one read-back)."""
    params = model.parameters()
    xp = B.xp_of(params[0])
    return bool(xp.isfinite(xp.stack([xp.abs(p).sum() for p in params]).sum()))


class AfterEvaluate:
    """``fn(model, iteration, mean_image)`` after every evaluation; its dict joins the row."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, run):
        if run.evaluated:
            run.row.update(self.fn(run.model, run.iteration, run.data.mean) or {})


class Progress:
    """A tqdm bar with the last row's numbers, or (without tqdm) one line per row; on rank 0
    and only with ``progress``."""

    def __init__(self, run):
        self.enabled = run.config.progress and run.parallel.lead
        self.bar = _bar(run.config.iterations, run.start) if self.enabled else None

    def __call__(self, run):
        if run.row is not None and self.enabled:
            self.show(run, run.row)
        if self.bar is not None:
            self.bar.update(1)

    def show(self, run, row):
        test = row.get("test_acc", run.test_acc)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['train_acc']:.3f}",
                                 img_s=f"{row['images_per_s']:.0f}",
                                 **({"test": f"{test:.3f}"} if test is not None else {}))
        else:
            run.say(f"iter {row['iteration']}/{run.config.iterations} loss {row['loss']:.3f} acc "
                    f"{row['train_acc']:.3f} {row['images_per_s']:.0f} img/s"
                    + (f" test {row['test_acc']:.3f}" if "test_acc" in row else ""))

    def close(self, run):
        if self.bar is not None:
            self.bar.close()


def _bar(total, initial):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="it", dynamic_ncols=True, leave=True)


class Checkpoints:
    """On evaluation steps, with a ``checkpoint_dir``: rank 0 writes checkpoint and metrics.json
    (a failed write ends every rank alike, naming the checkpoint that survives)."""

    def __call__(self, run):
        if run.evaluated and run.config.checkpoint_dir:
            run.last_checkpoint = run.parallel.collective(
                save_run, run.config, run.record, run.model, run.optimizer, run.data.mean,
                run.history, run.iteration, last_good=run.last_checkpoint)


def default_extensions(run, on_evaluate=None) -> list:
    """The parts every run has, in their order (``on_evaluate`` after the guard)."""
    parts = [LogRow(), Evaluate(), DivergenceGuard()]
    if on_evaluate is not None:
        parts.append(AfterEvaluate(on_evaluate))
    return parts + [Progress(run), Checkpoints()]
