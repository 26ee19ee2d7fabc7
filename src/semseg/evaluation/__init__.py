"""Scoring segmentations: the metrics (``scores``), a model scored at each image's own size through the
serving predictor (``native``), and the evaluation report (``report``)."""
