"""Training engine: schedules, losses, metrics, the epoch loop, checkpoints, fit()."""

from vpsearch.training.engine import Evaluation, NonFiniteLossError, evaluate
from vpsearch.training.reporter import Reporter, Reporters
from vpsearch.training.trainer import METRIC_COLUMNS, FitResult, fit

__all__ = ["METRIC_COLUMNS", "Evaluation", "FitResult", "NonFiniteLossError", "Reporter", "Reporters",
           "evaluate", "fit"]
