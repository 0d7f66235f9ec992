"""Training: one loop for every model (`train`), a `Task` per model family (`tasks/`).

  from tfharm import training
  from tfharm.training.tasks import harmoniser
  training.train(training.TrainOptions(workdir=..., data_dir=...),
                 harmoniser.HarmoniserTask(harmoniser.HarmoniserTaskConfig()))

`python -m tfharm.train` is the command line over this package; docs/training.md explains it.
"""

from tfharm.training.data import DataError
from tfharm.training.loop import DivergedError, is_chief, make_strategy, train
from tfharm.training.options import TrainOptions
from tfharm.training.task import Task

__all__ = ["DataError", "DivergedError", "Task", "TrainOptions", "is_chief", "make_strategy",
           "train"]
