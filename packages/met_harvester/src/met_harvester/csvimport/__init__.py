"""Bootstrap the mirror from the Met's Open Access CSV (`MetObjects.csv`): import and diff."""

from met_harvester.csvimport.importer import ImportReport, import_csv
from met_harvester.csvimport.reader import CsvIssue, MetCsvReader, NotMetCsvError

__all__ = ["CsvIssue", "ImportReport", "MetCsvReader", "NotMetCsvError", "import_csv"]
