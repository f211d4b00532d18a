"""The training loop and ``train_cifar()``: the paper's recipe on any of the data sets.

One iteration: a seeded, augmented batch -> forward -> softmax cross-entropy -> backward ->
Nesterov SGD with the (scaled) step schedule. On CuPy everything stays on the device; the
loop reads numbers back only when it logs (every ``log_every`` iterations) and evaluates.
A NaN or infinite loss is caught at the next log and stops training with a clear message;
checkpoints are only written after a finite loss has been seen, so the last one stays good.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

from .. import backend as B
from .. import functional as F
from ..data import DATASETS, BatchStream, eval_batches, load_dataset, pixel_mean
from ..models import REGISTRY, build
from .checkpoint import (checkpoint_name, latest_valid_checkpoint, list_checkpoints, load_checkpoint,
                         prune_checkpoints, save_checkpoint)
from .noise import add_label_noise
from .optim import PAPER_ITERATIONS, SGD, StepSchedule


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    history: list                       # one dict per log step: iteration, lr, loss, train_acc, images_per_s, ...
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
        return (f"{self.config['arch']} on {self.config['dataset']}: {last.get('iteration', 0)} iterations, "
                f"train loss {last.get('loss', float('nan')):.3f}, test accuracy "
                f"{100 * self.final_test_accuracy:.2f}% (error {100 * self.final_test_error:.2f}%), "
                f"{last.get('elapsed_s', 0):.0f} s" + (f", checkpoint {self.checkpoint_path}" if self.checkpoint_path else ""))


def evaluate(model, x_uint8, y, mean, batch_size=500):
    """(accuracy, mean loss) of ``model`` in eval mode on uint8 images."""
    name = model.backend
    was = model.training
    model.eval()
    correct, loss_sum = 0, 0.0
    try:
        for xb, yb in eval_batches(x_uint8, y, mean, batch_size):
            xd, yd = B.to_device(xb, name), B.to_device(yb, name)
            logits = model(xd)
            loss, _ = F.softmax_cross_entropy(logits, yd, validate=False)
            correct += int((logits.argmax(axis=1) == yd).sum())
            loss_sum += float(loss) * len(yb)
    finally:
        model.train(was)
    return correct / len(y), loss_sum / len(y)


def _validate(arch, dataset, batch_size, label_noise, iterations, backend, lr, eval_every, log_every,
              resume, checkpoint_dir):
    if arch not in REGISTRY:
        raise ValueError(f"unknown arch {arch!r}: expected one of {sorted(REGISTRY)}")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}: expected one of {DATASETS}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(label_noise, (int, float)) or not 0.0 <= label_noise < 1.0:
        raise ValueError(f"label_noise must lie in [0, 1), got {label_noise!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations <= 0:
        raise ValueError(f"iterations must be a positive int, got {iterations!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    for name, v in (("eval_every", eval_every), ("log_every", log_every)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if resume and not checkpoint_dir:
        raise ValueError("resume=True needs checkpoint_dir (where to look for checkpoints)")
    B.get(backend)      # BackendError now, not after loading data


def _progress(total, initial, enabled):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="it", dynamic_ncols=True, leave=True)


def train_cifar(arch: str = "attention92", dataset: str = "cifar10", data_dir: str | None = None,
                download: bool = False, backend: str = "numpy", iterations: int = PAPER_ITERATIONS,
                batch_size: int = 64, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 1e-4,
                label_noise: float = 0.0, attention: str = "mixed", learning: str = "arl", mask: str = "soft",
                seed: int = 0, checkpoint_dir: str | None = None, resume: bool = False,
                eval_every: int = 2000, log_every: int = 10, progress: bool = True, keep_checkpoints: int = 3,
                augment: bool = True, n_train: int | None = None, n_test: int | None = None,
                model_kwargs: dict | None = None, echo=print) -> TrainResult:
    """Train a Residual Attention Network with the paper's recipe (Sec. 4.1).

    Defaults are the paper's: Nesterov SGD, momentum 0.9, weight decay 1e-4, batch 64, LR 0.1
    divided by 10 at 40% and 60% of ``iterations`` (64k and 96k of 160k), augmentation by
    zero-padding 4, random crop and horizontal flip, per-pixel mean subtraction.
    ``n_train``/``n_test`` use the first images only (for quick runs); ``model_kwargs``
    override fields of the architecture's NetworkSpec (e.g. narrower ``widths``).
    Returns a :class:`TrainResult`; writes checkpoints and ``metrics.json`` to ``checkpoint_dir``.
    """
    _validate(arch, dataset, batch_size, label_noise, iterations, backend, lr, eval_every, log_every,
              resume, checkpoint_dir)
    np = B.numpy
    model_kwargs = dict(model_kwargs or {})
    config = dict(arch=arch, dataset=dataset, iterations=iterations, batch_size=batch_size, lr=lr,
                  momentum=momentum, weight_decay=weight_decay, label_noise=label_noise, attention=attention,
                  learning=learning, mask=mask, seed=seed, augment=augment, n_train=n_train, n_test=n_test,
                  model_kwargs=model_kwargs)
    if checkpoint_dir and not resume and list_checkpoints(checkpoint_dir):
        raise ValueError(f"{checkpoint_dir} already holds checkpoints of an earlier run; pass resume=True "
                         f"(--resume) to continue it, or choose another checkpoint_dir: nothing is overwritten")
    resume_from = latest_valid_checkpoint(checkpoint_dir, warn=echo) if (resume and checkpoint_dir and
                                                                          os.path.isdir(checkpoint_dir)) else None

    # data ------------------------------------------------------------------------------------
    kwargs = {"n_train": n_train or 10000, "n_test": n_test or 2000, "seed": seed} if dataset == "shapes" else {}
    if progress:
        echo(f"{'generating' if dataset == 'shapes' else 'loading'} {dataset} ...")
    data = load_dataset(dataset, data_dir, download, progress=progress, **kwargs)
    x_train, y_train, x_test, y_test = data.x_train, data.y_train, data.x_test, data.y_test
    if n_train:
        x_train, y_train = x_train[:n_train], y_train[:n_train]
    if n_test:
        x_test, y_test = x_test[:n_test], y_test[:n_test]
    if batch_size > len(y_train):
        raise ValueError(f"batch_size {batch_size} is larger than the training set ({len(y_train)} images)")
    C, H, W = data.image_shape
    if label_noise > 0:
        y_train, flipped = add_label_noise(y_train, label_noise, data.num_classes, seed)
        config["flipped"] = int(len(flipped))
    mean = pixel_mean(x_train)
    stream = BatchStream(x_train, y_train, mean, batch_size, seed=seed, augment_data=augment)

    # model and optimiser -----------------------------------------------------------------------
    model_kwargs = {"in_channels": C, "input_size": H, **model_kwargs}
    config["model_kwargs"] = model_kwargs            # what load_trained needs to rebuild the model
    model = build(arch, num_classes=data.num_classes, attention=attention, learning=learning, mask=mask,
                  seed=seed, **model_kwargs).to(backend)
    config["num_classes"] = data.num_classes
    config["parameters"] = model.num_parameters()
    if resume_from is not None:
        saved = resume_from[1][1]["config"]
        now = json.loads(json.dumps(config))         # as it would be saved (tuples become lists)
        different = {k: (saved.get(k), v) for k, v in now.items() if k != "iterations" and saved.get(k) != v}
        if different:
            raise ValueError(f"cannot resume from {resume_from[0]}: it was trained with different settings "
                             f"(saved, now): {different}")
    if progress:
        echo(f"{arch} ({config['parameters']:,} parameters) on {dataset}: {len(y_train)} training and "
             f"{len(y_test)} test images, {iterations} iterations of batch {batch_size}, backend {backend}")
    opt = SGD(model, lr=lr, momentum=momentum, weight_decay=weight_decay)
    schedule = StepSchedule(lr, iterations)
    history, start = [], 0
    if resume_from is not None:
        path, (arrays, meta) = resume_from
        model.load_state_dict(_section(arrays, "model"))
        opt.load_state_dict(_section(arrays, "optim"))
        start, history = meta["iteration"], meta["history"]
        echo(f"resuming from {path} at iteration {start}")

    # the loop ----------------------------------------------------------------------------------
    last_ckpt = resume_from[0] if resume_from else None
    metrics_path = os.path.join(checkpoint_dir, "metrics.json") if checkpoint_dir else None
    bar = _progress(iterations, start, progress)
    xp = B.get(backend)
    loss_acc, correct_acc, seen, t_log = xp.zeros((), dtype=xp.float32), xp.zeros((), dtype=xp.int64), 0, time.perf_counter()
    t_start = time.perf_counter() - (history[-1]["elapsed_s"] if history else 0.0)
    test_acc = history[-1].get("test_acc") if history else None
    try:
        for it in range(start, iterations):
            xb, yb = stream.batch(it)
            xd, yd = B.to_device(xb, backend), B.to_device(yb, backend)
            lr_it = schedule(it)
            logits = model(xd)
            loss, dlogits = F.softmax_cross_entropy(logits, yd, validate=False)
            model.zero_grad()
            model.backward(dlogits)
            opt.step(lr_it)
            loss_acc += loss
            correct_acc += (logits.argmax(axis=1) == yd).sum()
            seen += len(yb)
            done = it + 1
            evaluate_now = done % eval_every == 0 or done == iterations
            if done % log_every == 0 or evaluate_now:
                steps = seen / batch_size
                mean_loss = float(loss_acc) / steps          # the one read-back from the device
                if not np.isfinite(mean_loss):
                    raise TrainingDiverged(
                        f"the training loss became {mean_loss} between iterations {done - int(steps)} and {done} "
                        f"(lr {lr_it}); training stopped. The last good checkpoint is "
                        f"{last_ckpt or '(none written yet)'}; try a lower lr.")
                now = time.perf_counter()
                row = dict(iteration=done, lr=lr_it, loss=mean_loss, train_acc=int(correct_acc) / seen,
                           images_per_s=seen / (now - t_log), elapsed_s=now - t_start)
                loss_acc[...] = 0
                correct_acc[...] = 0
                seen, t_log = 0, now
                if evaluate_now:
                    test_acc, test_loss = evaluate(model, x_test, y_test, mean)
                    row.update(test_acc=test_acc, test_loss=test_loss)
                    t_log = time.perf_counter()              # evaluation time is not training speed
                history.append(row)
                if bar is not None:
                    bar.set_postfix(loss=f"{mean_loss:.3f}", acc=f"{row['train_acc']:.3f}",
                                    img_s=f"{row['images_per_s']:.0f}",
                                    **({"test": f"{test_acc:.3f}"} if test_acc is not None else {}))
                elif progress:
                    echo(f"iter {done}/{iterations} loss {mean_loss:.3f} acc {row['train_acc']:.3f} "
                         f"{row['images_per_s']:.0f} img/s" + (f" test {test_acc:.3f}" if evaluate_now else ""))
                if evaluate_now and checkpoint_dir:
                    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
                    arrays.update({f"optim.{k}": v for k, v in opt.state_dict().items()})
                    arrays["data.mean"] = mean
                    last_ckpt = save_checkpoint(os.path.join(checkpoint_dir, checkpoint_name(done)), arrays,
                                                dict(iteration=done, config=config, history=history))
                    prune_checkpoints(checkpoint_dir, keep_checkpoints)
                    _write_metrics(metrics_path, config, history)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if test_acc is None:   # resumed at the end: nothing left to train
        test_acc, _ = evaluate(model, x_test, y_test, mean)
    return TrainResult(history, test_acc, last_ckpt, metrics_path, config, model)


def _section(arrays, name):
    """The ``name.``-prefixed entries of a checkpoint's arrays, with the prefix removed."""
    prefix = name + "."
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def _write_metrics(path, config, history):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(dict(config=config, history=history), f, indent=1)
    os.replace(tmp, path)


def load_trained(path: str, backend: str = "numpy"):
    """Rebuild the model saved in checkpoint ``path``; returns (model, mean, meta)."""
    arrays, meta = load_checkpoint(path)
    cfg = meta["config"]
    model = build(cfg["arch"], num_classes=cfg["num_classes"], attention=cfg["attention"],
                  learning=cfg["learning"], mask=cfg["mask"], **cfg["model_kwargs"])
    model.load_state_dict(_section(arrays, "model"))
    return model.to(backend), arrays["data.mean"], meta


def evaluate_checkpoint(path: str, data_dir: str | None = None, backend: str = "numpy", n_test=None):
    """Test accuracy of a saved model on its data set's test split."""
    model, mean, meta = load_trained(path, backend)
    cfg = meta["config"]
    kwargs = {"n_train": 1, "n_test": cfg.get("n_test") or 2000, "seed": cfg["seed"]} if cfg["dataset"] == "shapes" else {}
    data = load_dataset(cfg["dataset"], data_dir, False, **kwargs)
    n = n_test or cfg.get("n_test")
    x, y = (data.x_test[:n], data.y_test[:n]) if n else (data.x_test, data.y_test)
    acc, loss = evaluate(model, x, y, mean)
    return dict(accuracy=acc, error=1 - acc, loss=loss, iteration=meta["iteration"], n_test=len(y),
                arch=cfg["arch"], dataset=cfg["dataset"])
