"""The long-running harvester: data-dir lock, schedule, health/metrics endpoint, run loop."""
