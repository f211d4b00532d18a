"""Pictures: attention masks over the input images (paper Fig. 1), training curves, and the
feature-response curve of the paper's Fig. 4. matplotlib is imported only here (extra `cli`)."""
from __future__ import annotations

import io
import json
import os

from . import backend
from .files import write_atomically
from .functional import bilinear_forward
from .models import collect_masks

DPI = 100


def _plt():
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("pictures need matplotlib: pip install 'minirattn[cli]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    """Write the figure whole or not at all (files.write_atomically); an output folder that does
    not exist or cannot be written is a clear OSError naming ``path``."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, dpi=DPI, format=os.path.splitext(path)[1][1:].lower() or "png")
        write_atomically(path, buf.getvalue())
    except OSError as exc:
        raise OSError(f"cannot write the picture {path}: {exc.strerror or exc}") from exc
    finally:
        _plt().close(fig)
    return path


def mask_maps(model, x):
    """{module name: (N, H, W) mask averaged over channels and upsampled to the input size}."""
    np = backend.numpy
    size = x.shape[2:]
    out = {}
    for name, m in collect_masks(model, x).items():
        mean = backend.to_numpy(m).mean(axis=1, keepdims=True).astype(np.float64)
        out[name] = bilinear_forward(mean, size)[0][:, 0]
    return out


def mask_region_share(model, x, region):
    """{module name: share of the images whose channel-averaged mask is larger inside ``region``
    than outside it}. region: (N, H, W) bool at the input size; images where it is empty or
    covers everything are left out. 0.5 means no preference; near 0 or 1, a clear one."""
    np = backend.numpy
    region, keep = _usable_region(region, x)
    shares = {}
    for name, m in mask_maps(model, x[keep]).items():
        inside = (m * region).sum(axis=(1, 2)) / region.sum(axis=(1, 2))
        outside = (m * ~region).sum(axis=(1, 2)) / (~region).sum(axis=(1, 2))
        shares[name] = float(np.mean(inside > outside))
    return shares


def mask_region_gap(model, x, region):
    """{module name: mean over images and channels of |mask on ``region`` - mask off it|}.

    Each channel of each module's mask M is averaged inside and outside the region at the mask's
    own resolution, every mask cell weighted by the share of its pixels in the region. region:
    (N, H, W) bool at the input size, H and W multiples of the masks' sizes; images where it is
    empty or covers everything are left out. 0 means the masks ignore where the region is.
    """
    np = backend.numpy
    region, keep = _usable_region(region, x)
    gaps = {}
    for name, m in collect_masks(model, x[keep]).items():
        m = backend.to_numpy(m).astype(np.float64)
        N, _, h, w = m.shape
        H, W = region.shape[1:]
        if H % h or W % w:
            raise ValueError(f"mask_region_gap: the input size {H}x{W} is not a multiple of "
                             f"{name}'s mask size {h}x{w}")
        inside_w = region.reshape(N, h, H // h, w, W // w).mean(axis=(2, 4))[
            :, None
        ]  # (N, 1, h, w)
        outside_w = 1.0 - inside_w
        inside = (m * inside_w).sum(axis=(2, 3)) / inside_w.sum(axis=(2, 3))
        outside = (m * outside_w).sum(axis=(2, 3)) / outside_w.sum(axis=(2, 3))
        gaps[name] = float(np.abs(inside - outside).mean())
    return gaps


def _usable_region(region, x):
    """(region of the usable images, their bool index): region must be (N, H, W) bool matching x;
    images where it is empty or covers everything are left out, and at least one must remain."""
    np = backend.numpy
    region = np.asarray(region, dtype=bool)
    if region.shape != (x.shape[0],) + tuple(x.shape[2:]):
        raise ValueError(f"mask region must have shape {(x.shape[0],) + tuple(x.shape[2:])}, got "
                         f"{region.shape}")
    keep = region.any(axis=(1, 2)) & ~region.all(axis=(1, 2))
    if not keep.any():
        raise ValueError("mask region is empty or full in every image")
    return region[keep], keep


#: What the mask picture's titles and colours mean, printed under it.
MASK_LEGEND = ("Row title: true class / predicted class. Each column: the mask M of one attention "
               "module, averaged over channels,\nupsampled to the image and overlaid; one colour "
               "scale per column (its bar below). Look for a colour on the object that differs "
               "from the background.")
PREDICTED_LEGEND = MASK_LEGEND.replace("true class / predicted class",
                                       "the predicted class and its probability")


def mask_figure(model, x, images_uint8, classes=None, labels=None, predictions=None,
                titles=None):
    """The figure :func:`plot_masks` draws: (fig, {module: [overlay image of each row]},
    {module: its colour bar}). Every overlay of a module uses that module's one colour scale (the
    min and max of its mask over all the images shown). ``titles``: one per row, instead of the
    true / predicted class."""
    plt = _plt()
    np = backend.numpy
    maps = mask_maps(model, x)
    n, names = len(images_uint8), list(maps)
    cols = 1 + len(names)
    fig = plt.figure(figsize=(1.6 * cols, 1.6 * n + 0.75))
    grid = fig.add_gridspec(n + 1, cols, height_ratios=[1.0] * n + [0.08], left=0.02, right=0.98,
                            top=1 - 0.25 / (1.6 * n + 0.75), bottom=0.5 / (1.6 * n + 0.75),
                            hspace=0.25, wspace=0.08)
    overlays, bars = {name: [] for name in names}, {}
    for i in range(n):
        img = images_uint8[i].transpose(1, 2, 0)
        img = img[..., 0] if img.shape[2] == 1 else img
        cmap = "gray" if img.ndim == 2 else None
        ax = fig.add_subplot(grid[i, 0])
        ax.imshow(img, cmap=cmap)
        ax.axis("off")
        if titles is not None:
            ax.set_title(titles[i], fontsize=7)
        elif labels is not None:
            title = classes[labels[i]] if classes else str(labels[i])
            if predictions is not None:
                title += f" / {classes[predictions[i]] if classes else predictions[i]}"
            ax.set_title(title, fontsize=7)
        for j, name in enumerate(names):
            ax = fig.add_subplot(grid[i, j + 1])
            ax.imshow(img, cmap=cmap)
            overlays[name].append(ax.imshow(maps[name][i], cmap="jet", alpha=0.5,
                                            vmin=float(np.min(maps[name])),
                                            vmax=float(np.max(maps[name]))))
            ax.axis("off")
            if i == 0:
                ax.set_title(name, fontsize=7)
    for j, name in enumerate(names):
        bars[name] = fig.colorbar(overlays[name][0], cax=fig.add_subplot(grid[n, j + 1]),
                                  orientation="horizontal")
        bars[name].ax.tick_params(labelsize=5)
    fig.text(0.01, 0.01, MASK_LEGEND if titles is None else PREDICTED_LEGEND, fontsize=5,
             va="bottom")
    return fig, overlays, bars


def plot_masks(model, x, images_uint8, path, classes=None, labels=None, predictions=None,
               titles=None):
    """One row per image: the image, then each attention module's mask over it (Fig. 1), one
    colour scale per module with its colour bar, and a legend of what the titles mean.

    x: the network's input (N, C, H, W), normalised; images_uint8: the same images for display;
    titles: one per row instead of the true / predicted class.
    """
    fig, _, _ = mask_figure(model, x, images_uint8, classes, labels, predictions, titles)
    return _save(fig, path)


def read_history(path):
    """The history rows of a metrics.json, or a ValueError naming the file and what is wrong."""
    try:
        with open(path) as f:
            history = json.load(f)["history"]
    except FileNotFoundError:
        raise ValueError(f"metrics file {path} does not exist") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"metrics file {path} cannot be read as a minirattn metrics.json "
                         f"({type(exc).__name__}: {exc})") from exc
    needed = ("iteration", "loss", "train_acc")
    if not isinstance(history, list) or not history or \
            not all(isinstance(h, dict) and all(k in h for k in needed) for h in history):
        raise ValueError(f"metrics file {path} holds no history rows with {', '.join(needed)}")
    return history


def curves_figure(metrics):
    """The figure :func:`plot_training_curves` draws: (fig, (loss axes, accuracy axes)). Losses
    on a log scale, so one extreme value does not flatten the rest."""
    plt = _plt()
    if isinstance(metrics, str):
        metrics = read_history(metrics)
    it = [h["iteration"] for h in metrics]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    a1.plot(it, [h["loss"] for h in metrics], label="train loss")
    tl = [(h["iteration"], h["test_loss"]) for h in metrics if "test_loss" in h]
    if tl:
        a1.plot(*zip(*tl), "o-", label="test loss")
    a1.set_yscale("log")             # one early spike (a test loss of 16) must not flatten the rest
    a1.set_xlabel("iteration"); a1.set_ylabel("cross-entropy (log scale)"); a1.legend()
    a2.plot(it, [h["train_acc"] for h in metrics], label="train accuracy")
    ta = [(h["iteration"], h["test_acc"]) for h in metrics if "test_acc" in h]
    if ta:
        a2.plot(*zip(*ta), "o-", label="test accuracy")
    a2.set_xlabel("iteration"); a2.set_ylabel("accuracy"); a2.set_ylim(0, 1); a2.legend()
    fig.tight_layout()
    return fig, (a1, a2)


def plot_training_curves(metrics, path):
    """Loss (log scale) and train/test accuracy against iteration; ``metrics`` is a metrics.json
    path or a history list."""
    fig, _ = curves_figure(metrics)
    return _save(fig, path)


def plot_feature_response(responses: dict, path):
    """Fig. 4: mean absolute response of each stage's output, one line per network."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    for name, values in responses.items():
        ax.plot(range(1, len(values) + 1), values, "o-", label=name)
    ax.set_xlabel("stage"); ax.set_ylabel("mean |output|"); ax.set_yscale("log"); ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def plot_reproduction(results: dict, path):
    """A table of ``minirattn reproduce``, in two panels: here, each variant's test error per seed
    (dots) with the mean and one standard deviation over seeds (bar), on an axis fitted to the
    data; and the paper's CIFAR-10 numbers for the same variants, on their own axis (different data
    and scale: compare the orderings, not the numbers). Fig. 4 instead: the last stage's response
    over the first stage's, over training, one line per seed, ARL and NAL."""
    plt = _plt()
    table, runs = results["table"], results["runs"]
    if table == "fig4":
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        colours = {"arl": "tab:blue", "nal": "tab:red"}
        for r in runs:
            its = [it for it, _ in r["response"]]
            fade = [resp[-1] / resp[0] for _, resp in r["response"]]
            ax.plot(its, fade, "o-", color=colours.get(r["label"], "k"), alpha=0.7,
                    label=f"{r['label'].upper()}" if r["seed"] == 0 else None)
        ax.set_xlabel("iteration")
        ax.set_ylabel("stage 3 / stage 1 mean |output|")
        ax.set_yscale("log")
        ax.legend()
        ax.set_title(results["title"], fontsize=8)
        fig.tight_layout()
        return _save(fig, path)
    variants = results["summary"]["variants"]
    labels = list(variants)
    paper = [variants[k]["paper"] for k in labels]
    has_paper = any(p is not None for p in paper)
    fig, axes = plt.subplots(1, 2 if has_paper else 1, sharex=True, squeeze=False,
                             figsize=(max(6.0, 0.9 * len(labels) + 3.5), 3.6),
                             gridspec_kw={"width_ratios": [3, 2] if has_paper else [1]})
    ax = axes[0, 0]
    xs = list(range(len(labels)))
    for r in runs:
        i = labels.index(r["label"])
        ax.plot(i + 0.08 * (r["seed"] - 1), 100 * r["final_error"], "o", color="tab:blue",
                alpha=0.5, markersize=4)
    ax.errorbar(xs, [variants[k]["mean"] for k in labels], [variants[k]["sd"] for k in labels],
                fmt="_", color="k", markersize=14, capsize=5, label="mean +/- sd over seeds")
    ax.set_ylabel("test error (%)")
    ax.set_title(f"here ({results['scale']} scale, {results['seeds']} seeds)", fontsize=8)
    ax.legend(fontsize=7)
    rotate = dict(rotation=30, ha="right") if len(labels) > 4 else {}
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, **rotate)
    if has_paper:
        right = axes[0, 1]
        right.plot([i for i, p in zip(xs, paper) if p is not None], [p for p in paper if p],
                   "s", color="tab:red")
        right.set_title("the paper (CIFAR-10)", fontsize=8)
        right.set_ylabel("test error (%)")
        right.set_xticks(xs)
        right.set_xticklabels(labels, **rotate)
    fig.suptitle(results["title"], fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
