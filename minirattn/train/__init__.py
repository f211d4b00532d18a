"""Optimiser, schedule, label noise, checkpoints and the training loop."""
from .optim import SGD, StepSchedule, PAPER_ITERATIONS, PAPER_MILESTONES
from .noise import add_label_noise
from .checkpoint import (save_checkpoint, load_checkpoint, CheckpointError, list_checkpoints,
                         latest_valid_checkpoint)
from .loop import (train_cifar, TrainResult, TrainingDiverged, evaluate, evaluate_checkpoint,
                   load_trained)

__all__ = [n for n in dir() if not n.startswith("_")]
