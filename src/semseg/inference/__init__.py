"""Inference: decode a request, run the network at any image size, encode the answer."""
