"""Training: the trainer and ``train`` (:mod:`.trainer`), optimiser and schedule (:mod:`.optim`), model and
device set-up (:mod:`.setup`), gradient accumulation (:mod:`.accumulate`), the weights' average (:mod:`.ema`),
what an evaluation records and early stopping (:mod:`.validation`), what a resumed run may change
(:mod:`.resume`), clean stops (:mod:`.stopping`), TensorBoard logging (:mod:`.tensorboard_log`) and
ablations (:mod:`.ablate`).

May import every package below it: config, data, ops, modeling, inference, evaluation and the top-level
helpers (the run folder and distributed helpers live at the top, as inference and modeling need them too).
"""

from .stopping import TrainingStopped  # noqa: F401
from .trainer import Trainer, train  # noqa: F401
