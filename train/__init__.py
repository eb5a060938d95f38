"""edgeport.train: datasets, models and the trainer that writes a run directory.

    from edgeport.train import fit, make_config
    fit(make_config(recipe="seed"), out_dir="runs/mnist")
    import_model("my_model.keras", dataset="photos/", out_dir="runs/mine")   # bring your own
"""

from edgeport.errors import DatasetError, EdgeportError

from .config import ConfigError, TrainConfig, make_config
from .data import Dataset, load_dataset
from .importer import ImportResult, ModelFitError, Normalization, import_model, make_normalization
from .run_dir import RunDirError, RunInfo, load_run, load_split
from .trainer import TrainResult, fit

__all__ = [
    "ConfigError",
    "Dataset",
    "DatasetError",
    "EdgeportError",
    "ImportResult",
    "ModelFitError",
    "Normalization",
    "RunDirError",
    "RunInfo",
    "TrainConfig",
    "TrainResult",
    "fit",
    "import_model",
    "load_dataset",
    "load_run",
    "load_split",
    "make_config",
    "make_normalization",
]
