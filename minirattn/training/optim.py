"""SGD with Nesterov momentum and weight decay, and the paper's step schedule.

Update (PyTorch's formulation of Nesterov, which Caffe's matches up to the LR scaling):
    g = grad + wd * w            (weight decay only on conv and FC weights, see below)
    v = mu * v + g
    w = w - lr * (g + mu * v)

Decided: batch-norm gamma/beta and biases are NOT decayed. They are scale and shift
parameters, decaying them pulls gamma towards zero and fights the normalisation; the
convolution and FC weights carry the capacity that decay is meant to regularise.
"""
from __future__ import annotations

from .. import backend
from ..checks import check_number

PAPER_ITERATIONS = 160_000
PAPER_MILESTONES = (64_000, 96_000)
#: the paper's ImageNet recipe (Sec. 4.3): batch 256, LR 0.1 / 10 at 200k and 400k, stop at 530k
IMAGENET_ITERATIONS = 530_000
IMAGENET_MILESTONES = (200_000, 400_000)
IMAGENET_BATCH = 256
#: recipe -> (the paper's iterations, its milestones)
RECIPES = {"cifar": (PAPER_ITERATIONS, PAPER_MILESTONES),
           "imagenet": (IMAGENET_ITERATIONS, IMAGENET_MILESTONES)}
#: recipe -> the settings it changes from TrainConfig's defaults (the CIFAR recipe's)
RECIPE_SETTINGS = {"cifar": {}, "imagenet": dict(iterations=IMAGENET_ITERATIONS,
                                                 batch_size=IMAGENET_BATCH)}


def decays(name: str) -> bool:
    """True for conv and FC weights: 4-D or 2-D ``weight`` tensors (BN's weight is 1-D)."""
    return name.endswith("weight")


class SGD:
    """Nesterov SGD over a model's parameters, as whole-buffer operations.

    The model's parameters and gradients are laid out in one flat buffer per dtype (the decayed
    weights first), and so are the velocities: a step is about ten operations whatever the number
    of tensors. ``velocity[name]`` and ``state_dict`` keep per-tensor names (views into the flat
    velocity), so checkpoints do not change.
    """

    def __init__(self, model, lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True):
        check_number("lr", lr, 0.0, low_open=True)
        check_number("momentum", momentum, 0.0, 1.0, high_open=True)
        check_number("weight_decay", weight_decay, 0.0)
        self.model, self.lr, self.momentum = model, lr, momentum
        self.weight_decay, self.nesterov = weight_decay, nesterov
        named = list(model.named_parameters())
        self.decay = {name: decays(name) and p.ndim > 1 for name, p, _ in named}
        self.groups = model.flatten_parameters(first=lambda name, p: self.decay[name])
        self._velocity = {dtype: backend.xp_of(g.params).zeros_like(g.params)
                          for dtype, g in self.groups.items()}
        shapes = {name: p.shape for name, p, _ in named}
        self.velocity = {name: self._velocity[dtype][start:stop].reshape(shapes[name])
                         for dtype, group in self.groups.items()
                         for name, (start, stop) in group.slices.items()}

    def step(self, lr=None):
        """w -= lr (g' + mu v) with v = mu v + g', g' = g + wd w on the decayed weights."""
        lr = self.lr if lr is None else lr
        mu = self.momentum
        for dtype, group in self.groups.items():
            p, g, v, nd = group.params, group.grads, self._velocity[dtype], group.n_first
            if self.weight_decay and nd:
                g = g.copy()
                g[:nd] += self.weight_decay * p[:nd]
            v *= mu
            v += g
            if self.nesterov:
                p -= lr * (g + mu * v)
            else:
                p -= lr * v

    def state_dict(self):
        return {f"velocity.{k}": v for k, v in self.velocity.items()}

    def load_state_dict(self, state):
        for k in self.velocity:
            key = f"velocity.{k}"
            if key not in state:
                raise KeyError(f"optimizer state lacks {key}")
            v = backend.to_device(
                (
                    backend.numpy.asarray(state[key])
                    if not backend.is_array(state[key])
                    else state[key]
                ),
                backend.name_of(self.velocity[k]),
            )
            self.velocity[k][...] = v.astype(self.velocity[k].dtype)


class StepSchedule:
    """LR 0.1, divided by 10 at 64k and 96k of 160k iterations (``recipe="cifar"``) or at 200k
    and 400k of 530k (``"imagenet"``): the milestones are scaled in proportion when training for
    fewer (or more) iterations."""

    def __init__(self, base_lr=0.1, iterations=PAPER_ITERATIONS, milestones=None, gamma=0.1,
                 recipe="cifar"):
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        if recipe not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r}: expected one of {sorted(RECIPES)}")
        self.base_lr, self.iterations, self.gamma = base_lr, iterations, gamma
        if milestones is None:
            total, marks = RECIPES[recipe]
            milestones = tuple(round(m * iterations / total) for m in marks)
        self.milestones = tuple(milestones)

    def __call__(self, iteration: int) -> float:
        k = sum(iteration >= m for m in self.milestones)
        return self.base_lr * self.gamma ** k
