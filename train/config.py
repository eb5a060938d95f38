"""Training options: one frozen dataclass, and the named recipes that fill it in."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from edgeport.errors import EdgeportError

__all__ = ["MAX_BATCH_SIZE", "MAX_EPOCHS", "MAX_EVALUATIONS", "MAX_ITERATIONS", "MODELS",
           "OPTIMIZERS", "RECIPES", "SCHEDULES", "STRATEGIES", "ConfigError", "TrainConfig",
           "make_config"]

MODELS = ("softmax", "mlp", "cnn")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine")
STRATEGIES = ("default", "mirrored", "multi-worker")

# Upper limits, checked before any data is loaded (issue 18: 10**12 iterations used to
# exhaust memory before the first step, a batch of 10**9 crashed with MemoryError).
# 10**9 optimizer steps are ~12 days at 1 ms a step: more is a typo, not a plan.
MAX_ITERATIONS = 10**9
# The tutorial's recipes train 4-10 epochs; 10**6 stays the documented maximum.
MAX_EPOCHS = 1e6
# A batch is held as float32 with its activations: 65,536 MNIST images are 205 MB of input
# alone (the cnn's first convolution output 6.6 GB). Typical batches are 32-512. The batch
# must also fit in the training split (checked by train.trainer once the data is loaded).
MAX_BATCH_SIZE = 65536
# Each evaluation scores the whole test and validation splits and adds one history row
# to metrics.json; the automatic spacing widens to stay under this.
MAX_EVALUATIONS = 100_000


class ConfigError(EdgeportError, ValueError):
    """An option is out of range or unknown."""


# Each recipe names every option it sets; flags given on the command line win.
RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "softmax": {
        # The tutorial, exactly: zero init, plain gradient descent, step 0.5, batches of 100.
        "seed": dict(iterations=1000, batch_size=100, learning_rate=0.5, optimizer="sgd",
                     schedule="constant"),
        # The most a linear model gets from MNIST: Adam, cosine decay over 10 epochs.
        "best": dict(epochs=10, batch_size=100, learning_rate=0.004, optimizer="adam",
                     schedule="cosine"),
    },
    "mlp": {
        # 784-512-10, dropout 0.2: 98.5 % (seed 0) and 98.1 % (seed 1) test accuracy on MNIST,
        # 13-17 s of training on 2 CPU cores. At step 0.001 it stayed under 98 %; patience 8
        # evaluations (4 epochs) leaves the cosine tail room to help.
        "default": dict(epochs=10, batch_size=128, learning_rate=0.002, optimizer="adam",
                        schedule="cosine", patience=8),
    },
    "cnn": {
        # conv32-conv64-dense128: 99.33 % (seed 0) and 99.27 % (seed 1) test accuracy on MNIST
        # in 4 epochs, 50-60 s of training on 2 busy CPU cores. At step 0.002 it reached 99.2 %.
        "default": dict(epochs=4, batch_size=128, learning_rate=0.003, optimizer="adam",
                        schedule="cosine", patience=4),
    },
}
_DEFAULT_RECIPE = {"softmax": "seed", "mlp": "default", "cnn": "default"}


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run; recorded verbatim in ``metrics.json``."""

    dataset: str = "mnist"
    model: str = "softmax"
    recipe: str = "seed"
    iterations: int | None = 1000
    epochs: float | None = None
    batch_size: int = 100
    learning_rate: float = 0.5
    optimizer: str = "sgd"
    schedule: str = "constant"
    seed: int = 0
    eval_every: int | None = None  # iterations between test evaluations; None = automatic
    patience: int | None = None  # evaluations without validation gain before stopping
    data_dir: str | None = None
    image_size: int = 28  # folder datasets only
    channels: int = 1  # folder datasets only
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)  # folder datasets only
    strategy: str = "default"
    stream: bool = False  # read the training split through a tf.data pipeline (train.folder)
    hidden: tuple[int, ...] = field(default=(512,))
    dropout: float = 0.2

    def __post_init__(self) -> None:
        checks = [
            (self.model in MODELS, f"model={self.model!r}; expected one of {', '.join(MODELS)}"),
            (self.optimizer in OPTIMIZERS,
             f"optimizer={self.optimizer!r}; expected one of {', '.join(OPTIMIZERS)}"),
            (self.schedule in SCHEDULES,
             f"schedule={self.schedule!r}; expected one of {', '.join(SCHEDULES)}"),
            (self.strategy in STRATEGIES,
             f"strategy={self.strategy!r}; expected one of {', '.join(STRATEGIES)}"),
            (self.batch_size >= 1, f"batch_size={self.batch_size}; expected a positive integer"),
            (self.batch_size <= MAX_BATCH_SIZE,
             f"batch_size={self.batch_size}; expected at most {MAX_BATCH_SIZE} (a batch is held "
             "in memory as float32 with its activations; typical: 32-512)"),
            (self.learning_rate > 0 and math.isfinite(self.learning_rate),
             f"learning_rate={self.learning_rate}; expected a positive number"),
            (self.learning_rate <= 1e6,
             f"learning_rate={self.learning_rate}; expected at most 1e6 (typical: 0.001-1)"),
            (self.iterations is None or self.iterations >= 1,
             f"iterations={self.iterations}; expected 1 or more"),
            (self.iterations is None or self.iterations <= MAX_ITERATIONS,
             f"iterations={self.iterations}; expected at most {MAX_ITERATIONS:.0e} (~12 days "
             "at 1 ms a step; the seed recipe runs 1000)"),
            (0 <= self.seed < 2**32, f"seed={self.seed}; expected 0 <= seed < 2**32"),
            (self.eval_every is None or self.eval_every >= 1,
             f"eval_every={self.eval_every}; expected 1 or more iterations"),
            (self.patience is None or self.patience >= 0,
             f"patience={self.patience}; expected 0 (off) or more evaluations"),
            (self.epochs is None or (0 < self.epochs <= MAX_EPOCHS and math.isfinite(self.epochs)),
             f"epochs={self.epochs}; expected 0 < epochs <= {MAX_EPOCHS:.0e}"),
            (0.0 <= self.dropout < 1.0, f"dropout={self.dropout}; expected 0 <= p < 1"),
            (self.channels in (1, 3), f"channels={self.channels}; expected 1 or 3"),
            (8 <= self.image_size <= 256, f"image_size={self.image_size}; expected 8..256"),
            (len(self.split) == 3 and abs(sum(self.split) - 1) < 1e-6
             and all(0 <= s < 1 for s in self.split) and self.split[0] > 0,
             f"split={','.join(map(str, self.split))}; expected three fractions summing to 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)

    def steps_for(self, n_train: int) -> int:
        """Total optimizer steps: ``iterations``, or ``epochs`` worth of batches."""
        if self.epochs is not None:
            return max(1, math.ceil(self.epochs * n_train / self.batch_size))
        return int(self.iterations or 0)

    def check_fits(self, n_train: int) -> int:
        """The total steps on a training split of ``n_train`` images, within the limits.

        Raises:
            ConfigError: the batch is larger than the split, the run is over
                :data:`MAX_ITERATIONS` steps, or ``eval_every`` gives over
                :data:`MAX_EVALUATIONS` evaluations.
        """
        if self.batch_size > n_train:
            raise ConfigError(
                f"batch_size={self.batch_size} is larger than the training split "
                f"({n_train} images); expected at most {n_train}; fix: pass a smaller "
                "--batch-size")
        total = self.steps_for(n_train)
        if total > MAX_ITERATIONS:
            raise ConfigError(
                f"epochs={self.epochs} at batch_size={self.batch_size} on {n_train} images is "
                f"{total} steps; expected at most {MAX_ITERATIONS:.0e}; fix: fewer --epochs "
                "or a larger --batch-size")
        if self.eval_every is not None and total // self.eval_every > MAX_EVALUATIONS:
            raise ConfigError(
                f"eval_every={self.eval_every} over {total} steps is {total // self.eval_every} "
                f"evaluations; expected at most {MAX_EVALUATIONS}; fix: pass --eval-every "
                f"{-(-total // MAX_EVALUATIONS)} or more")
        return total

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["split"] = list(self.split)
        d["hidden"] = list(self.hidden)
        return d


def make_config(
    *, model: str = "softmax", recipe: str | None = None, **overrides: Any
) -> TrainConfig:
    """A config from a recipe plus explicit overrides (``None`` values are ignored).

    Raises:
        ConfigError: unknown model or recipe, or an option out of range.
    """
    if model not in RECIPES:
        raise ConfigError(f"model={model!r}; expected one of {', '.join(MODELS)}")
    recipe = recipe or _DEFAULT_RECIPE[model]
    if recipe not in RECIPES[model]:
        raise ConfigError(
            f"recipe={recipe!r} for model={model}; expected one of {', '.join(RECIPES[model])}"
        )
    values: dict[str, Any] = dict(RECIPES[model][recipe])
    given = {k: v for k, v in overrides.items() if v is not None}
    if "iterations" in given or "epochs" in given:  # the run length given replaces the recipe's
        values.pop("iterations", None)
        values.pop("epochs", None)
    values.update(given)
    if values.get("epochs") is not None:
        values["iterations"] = None
    base = TrainConfig(model=model, recipe=recipe)
    return replace(base, **values)
