"""Training: the configuration, the loop and its parts, runs on disk, a trained model.

config.py (TrainConfig), loop.py (train, train_step, the Run), extensions.py (logging,
evaluation, divergence, progress, checkpoints), runs.py (run folders, resume, saving),
trained.py (loading, evaluating, predicting), optim.py (SGD, the schedule), checkpoint.py (the
file format), noise.py (Eq. 7's label noise).
"""
from .optim import SGD, StepSchedule, PAPER_ITERATIONS, PAPER_MILESTONES
from .noise import add_label_noise
from .checkpoint import (save_checkpoint, load_checkpoint, CheckpointError, CheckpointWriteError,
                         list_checkpoints, latest_valid_checkpoint)
from .config import TrainConfig, RESUME_MAY_CHANGE
from .extensions import (MetricLog, TrainingDiverged, LogRow, Evaluate, DivergenceGuard,
                         AfterEvaluate, Progress, Checkpoints, default_extensions, weights_finite)
from .runs import (run_folder, resolve_checkpoint_dir, resume_point, restore_run,
                   prepare_checkpoint_dir, save_run)
from .trained import (evaluate, evaluate_checkpoint, channel_std, class_names, load_trained,
                      load_test_split, predict, predict_images)
from .loop import (train, train_cifar, train_step, TrainResult, TrainData, Run, prepare_data,
                   build_model, start_run, loop)

__all__ = [n for n in dir() if not n.startswith("_")]
