"""The training loop and its parts: optimisation, metrics, early stopping."""
