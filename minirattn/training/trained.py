"""A trained network: rebuilt from what a checkpoint records, evaluated, asked for predictions.

- :func:`model_settings` / :func:`rebuild_model`: what a checkpoint records to build the network
  again, and the network it describes.
- :func:`load_trained`: a checkpoint's network with its weights, its mean image and its record.
- :func:`load_test_split`: the test images the run was tested on, through the same entry point.
- :func:`evaluate`: accuracy and mean loss in evaluation mode (summed over the ranks when
  data-parallel); :func:`evaluate_checkpoint` does it for a saved run; :func:`predict` gives
  the classes; :func:`predict_images` classifies your own pictures and draws the masks over
  them (``minirattn predict``).
"""
from __future__ import annotations

import os

from .. import backend as B
from .. import distributed as D
from .. import functional as F
from ..checks import check_positive_int
from ..data import eval_batches, kind, load_dataset, normalize
from ..models import build
from ..files import probe_folder
from .checkpoint import CheckpointError, load_checkpoint


def model_settings(config, num_classes: int, image_shape) -> dict:
    """What :func:`rebuild_model` needs to build the run's network again (saved in checkpoints)."""
    C, H, _ = image_shape
    return dict(arch=config.arch, num_classes=num_classes, mask_activation=config.mask_activation,
                learning=config.learning, mask=config.mask, dtype=config.dtype,
                spec={"in_channels": C, "input_size": H, **config.model_kwargs})


def rebuild_model(settings: dict, seed: int = 0):
    """The network :func:`model_settings` describes, freshly initialised from ``seed``
    (checkpoints written before the name ``mask_activation`` call it ``attention``)."""
    activation = settings.get("mask_activation", settings.get("attention"))
    return build(settings["arch"], num_classes=settings["num_classes"],
                 mask_activation=activation, learning=settings["learning"],
                 mask=settings["mask"], seed=seed, dtype=settings.get("dtype", "float32"),
                 **settings["spec"])


def section(arrays, name):
    """The ``name.``-prefixed entries of a checkpoint's arrays, with the prefix removed."""
    prefix = name + "."
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


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
        model.load_state_dict(section(arrays, "model"))
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
    k = kind(cfg["dataset"])
    data = load_dataset(cfg["dataset"], data_dir, need_train=False,
                        **k.test_split_args(cfg, n_test))
    return k.thin(data, None, n_test, need_train=False)


def class_names(meta: dict) -> list:
    """The class names of the run a checkpoint's ``meta`` describes (index = logit); checkpoints
    written before they recorded them give the class numbers."""
    cfg = meta["config"]
    if cfg.get("classes"):
        return list(cfg["classes"])
    return [str(i) for i in range(cfg.get("num_classes") or cfg["model"]["num_classes"])]


def channel_std(meta: dict):
    """The per-channel std a run's images were divided by (folders of images), else None."""
    return kind(meta["config"]["dataset"]).saved_std()


def evaluate(model, x_uint8, y, mean, batch_size=500, comm=None, std=None):
    """(accuracy, mean loss) of ``model`` in eval mode on uint8 images (or a folder split); with
    a ``comm`` of several ranks each evaluates its slice and the sums are added up."""
    name = model.backend
    correct, loss_sum = 0, 0.0
    n = len(y)
    comm = comm or D.Communicator()
    lo, hi = D.shard(n, comm.rank, comm.size)                 # this rank's slice (all of one)
    with model.mode(False):
        for xb, yb in eval_batches(x_uint8, y, mean, batch_size, std, lo, hi):
            xd, yd = B.to_device(xb.astype(model.dtype, copy=False), name), B.to_device(yb, name)
            logits = model(xd)
            loss, _ = F.softmax_cross_entropy(logits, yd, validate=False)
            correct += int((logits.argmax(axis=1) == yd).sum())
            loss_sum += float(loss) * len(yb)
    correct, loss_sum = comm.sum_numbers([correct, loss_sum])
    return correct / n, loss_sum / n


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


def eval_logits(model, x):
    """``model``'s logits for the normalised images ``x``, in evaluation mode, on the host."""
    with model.mode(False):
        return B.to_numpy(model(B.to_device(x.astype(model.dtype, copy=False), model.backend)))


def predict(model, x_uint8, mean, std=None):
    """(normalised images, predicted classes) of ``model`` in eval mode, on the host."""
    x = normalize(x_uint8, mean, std)
    return x, eval_logits(model, x).argmax(axis=1)


# ---- your own pictures --------------------------------------------------------------------
def predict_images(checkpoint: str, paths, out_dir: str | None = None, *, top: int = 3,
                   backend: str = "numpy"):
    """Classify pictures with a trained network and draw its attention masks over each.

    ``paths``: picture files of any size and Pillow mode, each brought to the network's input the
    way the run's data set brings its own (data/kinds.py: resize and centre crop, greyscale or
    RGB) and normalised as the run was. Returns (results, failures): one dict per picture read
    (``file``, ``top``: [(class, probability)] best first, ``masks``: the picture written, if
    ``out_dir``), and one (file, message) per file that is not a usable picture; those are
    skipped, the others still done. With ``out_dir``, ``<name>-masks.png`` per picture: every
    attention module's mask over it (paper Fig. 1, one colour scale per module and its bar),
    written whole or not at all."""
    from ..data import DataError
    check_positive_int("top", top)
    model, mean, meta = load_trained(checkpoint, backend)
    classes, std = class_names(meta), channel_std(meta)
    k, shape = kind(meta["config"]["dataset"]), (model.spec.in_channels, model.spec.input_size,
                                                 model.spec.input_size)
    if out_dir is not None:
        probe_folder(out_dir, f"the pictures' folder {out_dir}")
    results, failures, names = [], [], set()
    for path in paths:
        try:
            image = k.image_input(path, shape)[None]
        except (DataError, OSError) as exc:
            failures.append((path, str(exc)))
            continue
        picture = None
        if out_dir is not None:                   # a.png and a.jpg: a-masks.png, a-2-masks.png
            base = os.path.splitext(os.path.basename(path))[0]
            stem, i = base, 1
            while stem in names:
                i += 1
                stem = f"{base}-{i}"
            names.add(stem)
            picture = os.path.join(out_dir, f"{stem}-masks.png")
        results.append(_predict_one(model, image, mean, std, classes, path, picture, top))
    return results, failures


def _predict_one(model, image, mean, std, classes, path, picture, top):
    np = B.numpy
    x = normalize(image, mean, std)
    p = np.exp(F.log_softmax(eval_logits(model, x).astype(np.float64)))[0]
    order = np.argsort(-p, kind="stable")[:top]
    result = dict(file=path, top=[(classes[i], float(p[i])) for i in order])
    if picture is not None:
        from ..viz import plot_masks
        best, prob = result["top"][0]
        result["masks"] = plot_masks(model, x, image, picture, titles=[f"{best} ({prob:.0%})"])
    return result
