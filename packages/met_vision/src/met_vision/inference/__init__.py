"""Inference: loading a checkpoint and predicting images with it."""
