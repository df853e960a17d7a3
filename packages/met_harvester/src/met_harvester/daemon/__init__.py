"""The long-running harvester: schedule, health/metrics endpoint, run loop (the data-dir lock
is `met_harvester.datadir`)."""
