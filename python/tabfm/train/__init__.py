"""tabfm's training engine: one :class:`Trainer` for every model family, its configuration,
hooks, checkpoints and schedules, and the in-context model's pretraining."""

from tabfm.train._checkpoint import export_model
from tabfm.train._checkpoint import load as load_checkpoint
from tabfm.train._config import DataSection, OptimSection, Stage, TrainConfig, TrainSection
from tabfm.train._data import StagedData, StageSpec
from tabfm.train._hooks import FunctionHook, Hook, ValidationHook
from tabfm.train._optim import Schedule, build_optimizer, param_groups
from tabfm.train._trainer import Trainer, setup_distributed
from tabfm.train.tasks import ICLTask

__all__ = [
    "DataSection",
    "FunctionHook",
    "Hook",
    "ICLTask",
    "OptimSection",
    "Schedule",
    "Stage",
    "StageSpec",
    "StagedData",
    "TrainConfig",
    "TrainSection",
    "Trainer",
    "ValidationHook",
    "build_optimizer",
    "export_model",
    "load_checkpoint",
    "param_groups",
    "setup_distributed",
]
