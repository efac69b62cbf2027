"""Early stopping on a monitored validation metric, with state that survives a resume."""

from __future__ import annotations

import math
from typing import Any


class EarlyStopping:
    """Stop after `patience` epochs without improvement of `monitor` (higher is better unless
    it is a loss). `patience <= 0` never stops."""

    def __init__(self, monitor: str, patience: int):
        self.monitor = monitor
        self.patience = patience
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = 0
        self.bad_epochs = 0

    @property
    def mode(self) -> str:
        return "min" if self.monitor.endswith("loss") else "max"

    def is_better(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        return value < self.best if self.mode == "min" else value > self.best

    def update(self, value: float, epoch: int) -> bool:
        """Record one epoch's metric; True when it is a new best."""
        if self.is_better(value):
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "best": self.best, "best_epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The saved monitor comes back with its best value: a best loss is never compared as if
        it were an accuracy."""
        self.monitor = str(state.get("monitor", self.monitor))
        self.best = float(state["best"])
        self.best_epoch = int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])
