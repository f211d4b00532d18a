"""The `minirattn` command (also `python -m minirattn`).

    minirattn train                 # a small Residual Attention Network on the embedded shapes
    minirattn train --dataset cifar10 --arch attention92 --download --iterations 160000
    minirattn train --resume --lr 0.01      # continue the newest run, at a lower learning rate
    minirattn evaluate --checkpoint runs/shapes-attention56_small/ckpt-00000800.rattn
    minirattn masks --checkpoint runs/shapes-attention56_small/ckpt-00000800.rattn --out masks.png
    minirattn plot --metrics runs/shapes-attention56_small/metrics.json --out curves.png
    minirattn models                # the registry with parameter counts
    minirattn check                 # prove every op's backward on this machine
    mpiexec -n 2 minirattn train    # data-parallel on 2 ranks (pip install 'minirattn[dist]')
    minirattn reproduce table1 --seeds 3 --jobs 2   # the paper's Table 1, small scale

A mistake (a bad option, a missing or damaged file, a folder that cannot be written) ends with one
line naming what was wrong and exit status 2; a run whose loss blows up, with status 3. --debug (or
MINIRATTN_DEBUG=1) shows the Python traceback instead. Under mpiexec, rank 0 alone prints; an
error on one rank only ends every rank with a line naming the failed rank.
"""
from __future__ import annotations

import argparse
import os
import sys

#: What `minirattn train` with no arguments runs: small, fast, on the embedded data set (whose
#: sizes the data entry point decides: 10,000 training and 2,000 test images).
DEMO = dict(arch="attention56_small", dataset="shapes", iterations=800, batch_size=32, lr=0.1,
            eval_every=200)


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default where it has one to show: not for flags, not where the default
    is computed (None) and not where the help text says it already."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)

def build_parser() -> argparse.ArgumentParser:
    from .data import DATASETS
    from .functional import LEARNING_RULES, MASK_ACTIVATIONS
    from .models import MASKS, REGISTRY
    p = argparse.ArgumentParser(
        prog="minirattn",
        description="Residual Attention Networks in NumPy/CuPy.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error (also MINIRATTN_DEBUG=1)")
    p.add_argument("--debug", action="store_true", dest="debug_first", help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True)

    def command(name, **kw):
        return sub.add_parser(name, parents=[common], description=kw["help"],
                              formatter_class=_DefaultsHelp, **kw)

    t = command("train", help="train a network (defaults: the small demo on the embedded data)")
    t.add_argument("--arch", default=DEMO["arch"], choices=sorted(REGISTRY), metavar="NAME",
                   help=f"the network ({', '.join(sorted(REGISTRY))}; minirattn models lists them)")
    t.add_argument("--dataset", default=DEMO["dataset"], choices=DATASETS,
                   help="the data set; shapes is generated, needs no files")
    t.add_argument("--data-dir", default=None,
                   help="folder holding the data set (CIFAR: archive or extracted folder; "
                        "Fashion-MNIST: the IDX files, else Debian's package; folder: "
                        "train/<class>/<image> and val/<class>/<image>)")
    t.add_argument("--image-size", type=int, default=None,
                   help="--dataset folder: the crop size in pixels, and so the network's input "
                        "size (default 224)")
    t.add_argument("--workers", type=int, default=4,
                   help="--dataset folder: threads decoding images")
    t.add_argument("--download", action="store_true",
                   help="download CIFAR if it is not in --data-dir")
    t.add_argument("--backend", default="numpy", choices=["numpy", "cupy"],
                   help="numpy (CPU) or cupy (GPU)")
    t.add_argument("--iterations", type=int, default=DEMO["iterations"],
                   help="training iterations; the LR drops 10x at 40%% and 60%% of them "
                        "(--dataset folder: at 200/530 and 400/530 of them, the paper's "
                        "ImageNet recipe)")
    t.add_argument("--batch-size", type=int, default=DEMO["batch_size"], help="images per step")
    t.add_argument("--lr", type=float, default=DEMO["lr"], help="the base learning rate")
    t.add_argument("--weight-decay", type=float, default=1e-4,
                   help="on convolution and FC weights only")
    t.add_argument("--label-noise", type=float, default=0.0,
                   help="1 - r of Eq. (7): the share of training labels replaced, in [0, 1)")
    t.add_argument("--mask-activation", "--attention", default="mixed",
                   choices=tuple(MASK_ACTIVATIONS),
                   help="the mask activation: f1 mixed, f2 channel, f3 spatial (Table 1); "
                        "--attention is its earlier name")
    t.add_argument("--learning", default="arl", choices=LEARNING_RULES,
                   help="attention residual learning H = (1 + M) T, or naive H = M T (Table 3)")
    t.add_argument("--mask", default="soft", choices=MASKS,
                   help="bottom-up top-down soft mask, or local convolutions (Table 4)")
    t.add_argument("--seed", type=int, default=0, help="weights, data order and augmentation")
    t.add_argument("--checkpoint-dir", default=None,
                   help="where checkpoints and metrics.json go (default: runs/<dataset>-<arch>, "
                        "or -2, -3, ... if that holds an earlier run)")
    t.add_argument("--resume", nargs="?", const="yes", choices=["yes", "auto"],
                   help="continue the newest good checkpoint (nothing to continue is an error; "
                        "'--resume auto' starts a new run then); lr may change, the run's other "
                        "settings may not")
    t.add_argument("--eval-every", type=int, default=DEMO["eval_every"],
                   help="evaluate on the test split and write a checkpoint every N iterations")
    t.add_argument("--n-train", type=int, default=None,
                   help="use the first N training images (shapes: generate N; default 10000)")
    t.add_argument("--n-test", type=int, default=None,
                   help="use the first N test images (shapes: generate N; default 2000)")
    t.add_argument("--no-augment", action="store_true", help="no random crops and flips")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--procs", default="auto",
                   help="data-parallel ranks this command starts itself, one thread each: auto "
                        "(one per core; one on cupy), N, or 1 for one process; needs the dist "
                        "extra; ignored under an explicit mpiexec")
    t.add_argument("--threads", default="1",
                   help="threads over the batch in one process: 1 (the plain step, only its "
                        "matrix products threaded), N, or auto (one per core on numpy in one "
                        "process; 1 under ranks); pays on the paper's networks, not on the demo's")
    t.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                   help="float32 (the paper's), or float64 (slow; for exact comparisons)")
    t.add_argument("--distributed", default="auto", choices=["auto", "yes", "no"],
                   help="data-parallel over the ranks mpiexec started (auto: when there are "
                        "several); --batch-size is then the global batch")
    t.add_argument("--no-sync-batchnorm", action="store_true",
                   help="data-parallel: normalise each rank's shard alone instead of the global "
                        "batch")

    e = command("evaluate", help="test accuracy of a saved checkpoint")
    e.add_argument("--checkpoint", required=True, help="a ckpt-*.rattn file")
    e.add_argument("--data-dir", default=None, help="the data set's folder, if not the default")
    e.add_argument("--backend", default="numpy", choices=["numpy", "cupy"],
                   help="numpy (CPU) or cupy (GPU)")

    m = command("masks",
                help="draw every attention module's mask over test images (paper Fig. 1)")
    m.add_argument("--checkpoint", required=True, help="a ckpt-*.rattn file")
    m.add_argument("--out", default="masks.png", help="the picture to write (PNG)")
    m.add_argument("--n", type=int, default=6, help="how many test images (the first ones)")
    m.add_argument("--data-dir", default=None, help="the data set's folder, if not the default")

    pr = command("predict", help="classify your own pictures and draw the masks over each")
    pr.add_argument("--checkpoint", required=True, help="a ckpt-*.rattn file")
    pr.add_argument("--out", default=None,
                    help="folder for one <name>-masks.png per picture (none drawn when left out)")
    pr.add_argument("--top", type=int, default=3, help="how many classes to print per picture")
    pr.add_argument("--json", action="store_true", help="print JSON instead of one line each")
    pr.add_argument("--backend", default="numpy", choices=["numpy", "cupy"],
                    help="numpy (CPU) or cupy (GPU)")
    pr.add_argument("images", nargs="+", help="picture files (any size, any Pillow format)")

    ex = command("export", help="write a checkpoint's network as ONNX (the onnx extra)")
    ex.add_argument("--checkpoint", required=True, help="a ckpt-*.rattn file")
    ex.add_argument("--out", default="model.onnx", help="the .onnx file to write")

    pl = command("plot", help="draw the training curves from a metrics.json")
    pl.add_argument("--metrics", required=True, help="the metrics.json beside a run's checkpoints")
    pl.add_argument("--out", default="curves.png", help="the picture to write (PNG)")

    command("models", help="list the networks with their parameter counts")
    c = command("check", help="prove every op's backward against finite differences, here")
    c.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    from .experiments import SCALES, TABLES
    r = command("reproduce", help="run one of the paper's experiments (tables 1, 3, 4, 5 and "
                                  "Fig. 4) over seeds, resumable, and report it next to the "
                                  "paper's numbers")
    r.add_argument("table", choices=sorted(TABLES), help="which experiment")
    r.add_argument("--scale", default="small", choices=sorted(SCALES),
                   help="small: narrow networks on Fashion-MNIST, about an hour a table on 2 "
                        "cores; paper: the paper's networks and recipe on CIFAR-10")
    r.add_argument("--seeds", type=int, default=3, help="runs per configuration (seeds 0..N-1)")
    r.add_argument("--jobs", type=int, default=1,
                   help="runs side by side, one thread each (not under mpiexec)")
    r.add_argument("--backend", default="numpy", choices=["numpy", "cupy"],
                   help="array backend")
    r.add_argument("--out", default="results", help="folder for the runs and the results")
    r.add_argument("--data-dir", default=None, help="the data set's folder, if not the default")
    r.add_argument("--download", action="store_true", help="download CIFAR if it is missing")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    """Run one command; returns the exit status (0 done, 1 gradients wrong or an unexpected error,
    2 a mistake in the input, 3 training diverged)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv                          # what the ranks of --procs are started with
    debug = args.debug or args.debug_first or os.environ.get("MINIRATTN_DEBUG") == "1"
    from .distributed import DistributedError, launched_rank
    # under mpiexec every error that reaches this point happened on every rank alike (one that
    # only one rank met has ended the job already, naming the rank): rank 0 alone says it
    stderr = sys.stderr if launched_rank() == 0 else open(os.devnull, "w")
    from .backend import BackendError
    from .training import TrainingDiverged
    try:
        return _run(args)
    except BrokenPipeError:                  # the reader went away (`minirattn models | head`)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that Python's exit flush stays quiet too
        return 1
    except TrainingDiverged as exc:
        if debug:
            raise
        print(f"minirattn: {exc}", file=stderr)
        return 3
    except (ValueError, TypeError, OSError, BackendError, DistributedError) as exc:
        if debug:
            raise
        print(f"minirattn: {exc}", file=stderr)
        return 2
    except KeyboardInterrupt:
        print("minirattn: interrupted", file=stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if debug:
            raise
        print(f"minirattn: unexpected {type(exc).__name__}: {exc} (run again with --debug for the "
              f"traceback, and please report it)", file=stderr)
        return 1


def _run(args) -> int:
    if args.command == "check":
        from .selfcheck import run_selfcheck
        return 0 if run_selfcheck(args.seed) else 1
    if args.command == "models":
        from .models import build, list_models
        models = list_models()
        width = max(len(name) for name, _, _ in models)
        print(f"{'name':<{width}} {'parameters':>12} {'paper':>8}  description")
        for name, desc, paper in models:
            n = build(name, num_classes=1000 if name.endswith("imagenet") else 10).num_parameters()
            paper = f"{paper / 1e6:.1f}M" if paper else "-"
            print(f"{name:<{width}} {n:>12,} {paper:>8}  {desc}")
        return 0
    if args.command == "reproduce":
        from .experiments import reproduce
        reproduce(args.table, args.scale, seeds=args.seeds, jobs=args.jobs,
                  backend=args.backend, out=args.out, data_dir=args.data_dir,
                  download=args.download, progress=not args.no_progress)
        return 0
    if args.command == "predict":
        return _predict(args)
    if args.command == "export":
        from .interop.onnx import export_checkpoint
        print(export_checkpoint(args.checkpoint, args.out))
        return 0
    if args.command == "plot":
        from .viz import plot_training_curves
        print(plot_training_curves(args.metrics, args.out))
        return 0
    if args.command == "masks":
        from .training import channel_std, load_test_split, load_trained, predict
        from .viz import plot_masks
        if args.n < 1:
            raise ValueError(f"--n: expected how many test images to draw (an int >= 1), got "
                             f"{args.n}")
        model, mean, meta = load_trained(args.checkpoint)
        data = load_test_split(meta, args.data_dir, args.n)
        images = data.x_test[:]              # a folder split decodes here; an array is a view
        x, preds = predict(model, images, mean, channel_std(meta))
        print(plot_masks(model, x, images, args.out, data.classes, data.y_test, preds))
        return 0
    if args.command == "evaluate":
        from .training import evaluate_checkpoint
        r = evaluate_checkpoint(args.checkpoint, args.data_dir, args.backend)
        print(f"{r['arch']} on {r['dataset']} (iteration {r['iteration']}): test accuracy "
              f"{100 * r['accuracy']:.2f}% (error {100 * r['error']:.2f}%) on {r['n_test']} "
              f"images, loss {r['loss']:.4f}")
        return 0
    from .training import TrainConfig, train
    config = TrainConfig(
        arch=args.arch, dataset=args.dataset, data_dir=args.data_dir, download=args.download,
        backend=args.backend, iterations=args.iterations, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, label_noise=args.label_noise,
        mask_activation=args.mask_activation,
        learning=args.learning, mask=args.mask, seed=args.seed,
        checkpoint_dir=args.checkpoint_dir or "auto",
        resume={None: False, "yes": True, "auto": "auto"}[args.resume],
        eval_every=args.eval_every, progress=not args.no_progress, augment=not args.no_augment,
        n_train=args.n_train, n_test=args.n_test, image_size=args.image_size,
        workers=args.workers,
        distributed={"auto": "auto", "yes": True, "no": False}[args.distributed],
        sync_batchnorm=not args.no_sync_batchnorm, dtype=args.dtype,
        threads=_threads(args.threads))
    from .distributed import launch_ranks, launched_ranks, plan_ranks
    if launched_ranks() <= 1 and config.distributed is not False:    # not under mpiexec
        ranks, note = plan_ranks(args.procs, config.batch_size, config.backend)
        if note:
            print(note, file=sys.stderr)
        if ranks > 1 and config.threads not in (1, "auto"):
            raise ValueError(f"--threads {config.threads}: threads over the batch run in one "
                             f"process, and --procs {args.procs} starts {ranks} ranks; add "
                             f"--procs 1 (or leave --threads out)")
        if ranks > 1:                # the same command on every rank (which ignores --procs)
            return launch_ranks(ranks, args.argv)
    result = train(config)
    from .distributed import launched_rank
    if launched_rank() == 0:
        print(result.summary())
        print(f"metrics: {result.metrics_path}")
    return 0


def _threads(value: str):
    """--threads: 'auto' or a whole number (TrainConfig checks the range)."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"--threads: expected 'auto' or a number of threads >= 1, got "
                         f"{value!r}") from None


def _predict(args) -> int:
    """``minirattn predict``: one line per picture (or JSON); a file that is not a usable picture
    gets one line on stderr naming it, the others are still done, and the status is then 2."""
    import json
    from .training import predict_images
    results, failures = predict_images(args.checkpoint, args.images, args.out, top=args.top,
                                       backend=args.backend)
    if args.json:
        print(json.dumps(dict(results=results, failures=[dict(file=f, error=e)
                                                         for f, e in failures]), indent=1))
    else:
        for r in results:
            (best, p), rest = r["top"][0], r["top"][1:]
            print(f"{r['file']}: {best} {p:.1%}" + "".join(f", {c} {q:.1%}" for c, q in rest)
                  + (f" -> {r['masks']}" if "masks" in r else ""))
    for path, message in failures:
        print(f"minirattn: {message}", file=sys.stderr)
    return 2 if failures else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
