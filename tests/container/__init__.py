"""Tests of the images: the build files, and the CPU image under a real Docker engine."""
