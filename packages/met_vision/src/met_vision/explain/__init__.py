"""Explanations: class-activation maps and the `python -m met_vision.explain` command."""
