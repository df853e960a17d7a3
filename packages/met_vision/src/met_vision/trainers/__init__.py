"""Trainers: the Lightning task, losses, metrics, callbacks, backbones and result plots."""
