"""`python -m met_harvester` runs the CLI."""

from met_harvester.cli import main

main()
