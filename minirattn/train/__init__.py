"""Optimiser, schedule, label noise, checkpoints, the training configuration and loop."""
from .optim import SGD, StepSchedule, PAPER_ITERATIONS, PAPER_MILESTONES
from .noise import add_label_noise
from .checkpoint import (save_checkpoint, load_checkpoint, CheckpointError, CheckpointWriteError,
                         list_checkpoints, latest_valid_checkpoint)
from .config import TrainConfig, RESUME_MAY_CHANGE
from .loop import (train, train_cifar, train_step, TrainResult, TrainingDiverged, TrainData,
                   prepare_data, build_model, resume_point, prepare_checkpoint_dir, run_folder,
                   evaluate, evaluate_checkpoint, channel_std, load_trained, load_test_split,
                   predict, weights_finite, MetricLog)

__all__ = [n for n in dir() if not n.startswith("_")]
