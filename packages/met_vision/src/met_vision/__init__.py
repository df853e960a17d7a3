"""met_vision: train, explain and audit classifiers on a met_harvester mirror."""

__version__ = "0.1.0"
