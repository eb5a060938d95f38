"""edgeport.train: datasets, models and the trainer that writes a run directory.

    from edgeport.train import fit, make_config
    fit(make_config(recipe="seed"), out_dir="runs/mnist")
"""

from edgeport.errors import DatasetError, EdgeportError

from .config import ConfigError, TrainConfig, make_config
from .data import Dataset, load_dataset
from .run_dir import RunDirError, RunInfo, load_run, load_split
from .trainer import TrainResult, fit

__all__ = [
    "ConfigError",
    "Dataset",
    "DatasetError",
    "EdgeportError",
    "RunDirError",
    "RunInfo",
    "TrainConfig",
    "TrainResult",
    "fit",
    "load_dataset",
    "load_run",
    "load_split",
    "make_config",
]
