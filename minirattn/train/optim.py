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


def decays(name: str) -> bool:
    """True for conv and FC weights: 4-D or 2-D ``weight`` tensors (BN's weight is 1-D)."""
    return name.endswith("weight")


class SGD:
    """Nesterov SGD over a model's named parameters; velocities live beside the parameters."""

    def __init__(self, model, lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True):
        check_number("lr", lr, 0.0)
        if lr == 0:
            raise ValueError("lr: expected a number > 0, got 0.0")
        check_number("momentum", momentum, 0.0, 1.0, high_open=True)
        check_number("weight_decay", weight_decay, 0.0)
        self.model, self.lr, self.momentum = model, lr, momentum
        self.weight_decay, self.nesterov = weight_decay, nesterov
        self.velocity = {
            name: backend.xp_of(p).zeros_like(p) for name, p, _ in model.named_parameters()
        }
        self.decay = {name: decays(name) and p.ndim > 1 for name, p, _ in model.named_parameters()}

    def step(self, lr=None):
        lr = self.lr if lr is None else lr
        mu = self.momentum
        for name, p, g in self.model.named_parameters():
            if self.weight_decay and self.decay[name]:
                g = g + self.weight_decay * p
            v = self.velocity[name]
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
    """LR 0.1, divided by 10 at 64k and 96k of 160k iterations: the milestones are scaled
    in proportion when training for fewer (or more) iterations."""

    def __init__(self, base_lr=0.1, iterations=PAPER_ITERATIONS, milestones=None, gamma=0.1):
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        self.base_lr, self.iterations, self.gamma = base_lr, iterations, gamma
        if milestones is None:
            milestones = tuple(round(m * iterations / PAPER_ITERATIONS) for m in PAPER_MILESTONES)
        self.milestones = tuple(milestones)

    def __call__(self, iteration: int) -> float:
        k = sum(iteration >= m for m in self.milestones)
        return self.base_lr * self.gamma ** k
