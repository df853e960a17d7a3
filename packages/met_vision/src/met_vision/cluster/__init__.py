"""Cluster: SLURM environment checks and preemption handling."""
