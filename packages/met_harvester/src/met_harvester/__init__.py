"""met_harvester: mirror The Met's Open Access collection into SQLite and a blob store."""

__version__ = "0.1.0"
