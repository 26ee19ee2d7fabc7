"""Early stopping on validation mIoU, as the built-in documents it.

An epoch improves when ``(mIoU - best) / best > tolerance`` (any gain counts when best is 0).
Training never stops before ``early_stopping_min_epochs`` epochs, and stops once ``patience``
epochs in a row have not improved.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EarlyStopping:
    enabled: bool
    min_epochs: int
    patience: int
    tolerance: float
    best: float = -1.0
    epochs_without_improvement: int = 0

    def improved(self, score: float) -> bool:
        if self.best < 0:
            return True
        if self.best == 0:
            return score > 0
        return (score - self.best) / self.best > self.tolerance

    def update(self, score: float) -> bool:
        """Record one epoch's score; True when it is the highest so far (the weights worth keeping).

        The patience counter follows the tolerance rule; the best score is tracked exactly, so
        ``model_best.params`` always holds the highest-mIoU weights whatever the tolerance.
        """
        if self.improved(score):
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        new_best = score > self.best
        if new_best:
            self.best = score
        return new_best

    def should_stop(self, epochs_done: int) -> bool:
        return self.enabled and epochs_done >= self.min_epochs and self.epochs_without_improvement >= self.patience
