"""One training configuration: every setting of a run, validated once, at construction.

``TrainConfig(**settings)`` raises a clear ``ValueError``/``TypeError`` (or ``BackendError``)
before any data is loaded; ``train_cifar(**settings)`` builds one. ``to_dict()`` is what
checkpoints and ``metrics.json`` record, and ``TrainConfig.from_dict`` reads it back.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from .. import backend as B
from ..checks import check_choice, check_number, check_positive_int, old_name
from ..data import DATASETS, KINDS
from ..models import REGISTRY, check_choices
from .optim import PAPER_ITERATIONS, RECIPE_SETTINGS, StepSchedule

#: Settings that say where and how a run goes: a resumed run may change them, and ``to_dict``
#: leaves the machine-specific ones out. All but one leave the numbers alone; sync_batchnorm
#: (data-parallel runs only) changes the batch statistics, and is here so that a run may be
#: continued on another number of ranks or without synchronization.
PLACE_FIELDS = ("data_dir", "download", "backend", "checkpoint_dir", "resume", "progress",
                "log_every", "eval_every", "keep_checkpoints", "distributed", "sync_batchnorm",
                "workers", "threads")

#: Settings a resumed run may change besides PLACE_FIELDS: the base learning rate (lower it after
#: a blow-up). Every change is recorded in the run's ``resumes``. Everything else is the run's
#: identity: a checkpoint trained with another value is refused, ``iterations`` included (it moves
#: the schedule's milestones).
RESUME_MAY_CHANGE = ("lr",)

#: ``checkpoint_dir="auto"`` (the default): runs/<dataset>-<arch>, or -2, -3, ... so that a new run
#: never overwrites an earlier one (with ``resume``, the newest that exists). None keeps nothing.
AUTO = "auto"

#: Settings that belong to this machine, not to the run: ``to_dict`` (what checkpoints record)
#: leaves them out.
MACHINE_FIELDS = ("data_dir", "backend", "checkpoint_dir", "resume", "progress", "distributed",
                  "threads")


@dataclass(frozen=True)
class TrainConfig:
    """A training run: the paper's recipe by default (Sec. 4.1; docs/conventions.md).

    arch: a registered network; dataset: "cifar10" | "cifar100" | "fashion-mnist" | "shapes" |
    "folder" (below);
    checkpoint_dir: "auto" (runs/<dataset>-<arch>[-N]), a folder, or None to keep nothing;
    resume: False (a new run; a folder holding checkpoints is refused), True (continue the newest
    good checkpoint; nothing to continue is an error) or "auto" (continue if there is one);
    dtype: "float32" (the paper's and the default) or "float64" (slow; for exact comparisons);
    n_train / n_test: use the first images only (``shapes``: how many to generate, 10,000 /
    2,000 when left None); model_kwargs: fields of the network's NetworkSpec to override;
    mask_activation / learning / mask: the paper's ablations (Tables 1, 3, 4; ``attention`` is
    accepted as the earlier name of mask_activation and stored as it); label_noise: 1 - r of
    Eq. (7). LR ``lr`` divided by 10 at 40% and 60% of ``iterations``.
    distributed: False (one process), True (the ranks ``mpiexec`` started; needs the ``dist``
    extra) or "auto" (data-parallel when launched on more than one rank); ``batch_size`` is then
    the global batch, split over the ranks. sync_batchnorm: batch norm over the global batch
    (default; N ranks then compute the step one process computes), or False: each rank's shard
    alone (minirattn.distributed).
    threads: 1 (the default: the plain step, only its matrix products threaded by the BLAS), N, or
    "auto" (one per core on NumPy in one process, else 1): the batch split over N threads of this
    process, each running its part through a replica of the network that shares its weights,
    batch norm summed over the threads (minirattn.distributed.BatchThreads): the one-thread step
    to round-off. It pays on the paper's networks and loses on small ones, whose operations are
    too small to release the GIL for long (benchmarks/README.md). Under several ranks N must be 1.
    dataset="folder": images from ``data_dir``/train/<class>/ and val/<class>/ (data/folder.py),
    cropped to ``image_size`` pixels (224 when None; the network's input size follows it),
    decoded by ``workers`` threads; the LR milestones follow the paper's ImageNet recipe (200k
    and 400k of 530k, scaled); :func:`train` (``from_settings``) also defaults to its batch 256
    and 530k iterations there.
    """
    arch: str = "attention92"
    dataset: str = "cifar10"
    iterations: int = PAPER_ITERATIONS
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    label_noise: float = 0.0
    mask_activation: str = "mixed"
    learning: str = "arl"
    mask: str = "soft"
    seed: int = 0
    augment: bool = True
    n_train: int | None = None
    n_test: int | None = None
    model_kwargs: dict = field(default_factory=dict)
    dtype: str = "float32"
    image_size: int | None = None
    # where and how (PLACE_FIELDS)
    data_dir: str | None = None
    download: bool = False
    backend: str = "numpy"
    checkpoint_dir: str | None = AUTO
    resume: bool | str = False
    progress: bool = True
    log_every: int = 10
    eval_every: int = 2000
    keep_checkpoints: int = 3
    distributed: bool | str = False
    sync_batchnorm: bool = True
    workers: int = 4
    threads: int | str = 1
    # the earlier name of mask_activation: accepted, moved there, never recorded
    attention: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.attention is not None:
            object.__setattr__(self, "mask_activation", old_name(
                {"attention": self.attention}, "attention", "mask_activation",
                self.mask_activation, "mixed"))
            object.__setattr__(self, "attention", None)
        check_choice("arch", self.arch, sorted(REGISTRY))
        check_choice("dataset", self.dataset, DATASETS)
        check_choices(self.mask_activation, self.learning, self.mask)
        for name in ("iterations", "batch_size", "eval_every", "log_every", "workers"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("keep_checkpoints", self.keep_checkpoints, 0)
        check_positive_int("seed", self.seed, 0)
        for name in ("n_train", "n_test"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        check_number("lr", self.lr, 0.0, low_open=True)
        check_number("momentum", self.momentum, 0.0, 1.0, high_open=True)
        check_number("weight_decay", self.weight_decay, 0.0)
        check_number("label_noise", self.label_noise, 0.0, 1.0, high_open=True)
        if not isinstance(self.model_kwargs, dict):
            raise TypeError(f"model_kwargs: expected a dict of NetworkSpec fields, got "
                            f"{type(self.model_kwargs).__name__}")
        if self.image_size is not None:
            if not KINDS[self.dataset].sized:
                raise ValueError(f"image_size applies to dataset='folder' only (the {self.dataset} "
                                 f"images have a fixed size), got image_size={self.image_size}")
            check_positive_int("image_size", self.image_size, 8)
        check_choice("resume", self.resume, (False, True, "auto"))
        check_choice("dtype", self.dtype, ("float32", "float64"))
        check_choice("distributed", self.distributed, (False, True, "auto"))
        check_choice("sync_batchnorm", self.sync_batchnorm, (True, False))
        if self.threads != "auto":
            if isinstance(self.threads, bool) or not isinstance(self.threads, int) \
                    or self.threads < 1:
                raise ValueError(f"threads: expected 'auto' or an int >= 1, got "
                                 f"{self.threads!r}")
            if self.threads > 1 and self.backend != "numpy":
                raise ValueError(f"threads={self.threads}: threads over the batch are for the "
                                 f"NumPy backend; backend {self.backend!r} takes threads=1 or "
                                 f"'auto'")
        if self.resume and not self.checkpoint_dir:
            raise ValueError(f"resume={self.resume!r} needs checkpoint_dir (where to look for "
                             f"checkpoints)")
        if self.checkpoint_dir is not None and not isinstance(self.checkpoint_dir, str):
            raise TypeError(f"checkpoint_dir: expected a folder name, 'auto' or None, got "
                            f"{type(self.checkpoint_dir).__name__}")
        B.get(self.backend)      # BackendError now, not after loading data

    @classmethod
    def from_settings(cls, **settings) -> "TrainConfig":
        """A configuration of ``settings``, the data set's recipe filling what is not given
        (folders of images: the paper's ImageNet batch 256 and 530k iterations; the kind names
        its recipe: data/kinds.py; the recipe its settings: optim.py)."""
        name = settings.get("dataset", cls.dataset)
        defaults = RECIPE_SETTINGS[KINDS[name].recipe] if name in KINDS else {}   # else refused
        return cls(**{**defaults, **settings})

    @property
    def recipe(self) -> str:
        """The paper's schedule this run scales: "imagenet" for folders of images, else "cifar"
        (the data set's kind decides: data/kinds.py)."""
        return KINDS[self.dataset].recipe

    def schedule(self, iterations: int | None = None) -> StepSchedule:
        """The run's learning-rate schedule (the one place it is made): ``lr`` divided by 10 at
        the recipe's milestones scaled to ``iterations`` (the run's own when None)."""
        return StepSchedule(self.lr, iterations or self.iterations, recipe=self.recipe)

    def replace(self, **changes) -> "TrainConfig":
        """A copy with some settings changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The run's settings as JSON values (tuples become lists), without MACHINE_FIELDS."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
             if f.name not in MACHINE_FIELDS and f.name != "attention"}
        return json.loads(json.dumps(d))

    @classmethod
    def from_dict(cls, d: dict, **changes) -> "TrainConfig":
        """The configuration a checkpoint or ``metrics.json`` recorded (entries that are not
        settings, such as ``num_classes``, are skipped), with ``changes`` applied."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in d.items() if k in names}, **changes})

    def differences(self, saved: dict, *, identity: bool = True) -> dict:
        """{setting: (saved, now)} for the settings that differ from ``saved`` (a ``to_dict()``):
        those of the run's identity (default), or those a resumed run may change
        (``identity=False``: RESUME_MAY_CHANGE)."""
        now = self.to_dict()
        saved = dict(saved)
        if "model" not in saved and isinstance(saved.get("model_kwargs"), dict):
            # records written before the "model" entry kept the input size in model_kwargs
            saved["model_kwargs"] = {k: v for k, v in saved["model_kwargs"].items()
                                     if k not in ("in_channels", "input_size")}
        if "attention" in saved and "mask_activation" not in saved:
            saved["mask_activation"] = saved.pop("attention")     # its earlier name
        keys = [k for k in now if k not in PLACE_FIELDS and (k in RESUME_MAY_CHANGE) != identity]
        return {k: (saved.get(k), now[k]) for k in keys if saved.get(k) != now[k]}
