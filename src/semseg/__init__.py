"""semseg: a drop-in, open replacement for SageMaker's built-in Semantic Segmentation algorithm.

The library is importable without Flask or Docker: configuration, data, model, training loop,
artifacts and the predictor live here; the HTTP layer lives in the top-level ``serve`` package.
"""
