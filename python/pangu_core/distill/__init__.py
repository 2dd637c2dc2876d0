"""Iterative distillation: model-aware data selection, SFT, and merging between rounds."""
