"""Sampling of the machine: GPUs through NVML, the training process tree, memory and disk."""
