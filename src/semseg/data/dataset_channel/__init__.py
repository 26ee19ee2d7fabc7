"""The ``dataset`` channel: a CVAT "Segmentation Mask 1.1" export or the annotation platform's
dataset zip (or either tree unzipped), turned into File-mode splits (see ``prepare``)."""

from .prepare import implied_hyperparameters, prepare

__all__ = ["implied_hyperparameters", "prepare"]
