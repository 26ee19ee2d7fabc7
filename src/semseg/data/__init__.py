"""Training data: File-mode channels, label maps, transforms, and (for Pipe mode) record streams."""
