"""What a training run hands back: `RunResult`, and the interruption that carries an exit code."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emorec.errors import EmorecError


class TrainingInterrupted(EmorecError):
    """SIGINT / SIGTERM: a resumable checkpoint was written; exit code 128 + signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


@dataclass
class RunResult:
    run_dir: Path
    epochs_completed: int
    best_epoch: int
    best_metric: float
    monitor: str
    stopped_early: bool
    wall_time_s: float
    history: list[dict[str, Any]] = field(default_factory=list)
    is_main: bool = True  # False on the other ranks of a DDP run (they print nothing)

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}
