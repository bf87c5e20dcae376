"""Trainer callbacks shared by the training drivers and Q-PEFT training."""
from __future__ import annotations

import logging
import math
import time

from transformers import TrainerCallback

logger = logging.getLogger("repllama_pyserini.train")


class EpochCallback(TrainerCallback):
    """Tells the dataset which epoch starts (its negatives are drawn per epoch), also after a resume."""

    def __init__(self, dataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(int(math.floor((state.epoch or 0) + 1e-6)))


class TimeLimitCallback(TrainerCallback):
    """Stops training (and saves) once ``minutes`` of training have passed: a bounded-time run."""

    def __init__(self, minutes: float):
        self.seconds = minutes * 60
        self.start = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.time()

    def on_step_end(self, args, state, control, **kwargs):
        if self.start is not None and time.time() - self.start >= self.seconds:
            logger.warning("time limit of %.1f min reached at step %d: stopping", self.seconds / 60, state.global_step)
            control.should_training_stop = True
            control.should_save = True
        return control
