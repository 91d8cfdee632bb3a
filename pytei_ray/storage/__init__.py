"""Results storage: the results-directory owner and the Parquet row schemas."""

from .schema import RESERVED, golden_schema, result_schema, rows_to_table
from .store import GOLDEN_DIR, JOB_COPY, MANIFEST, QUARANTINE_DIR, ResultsStore
from .writer import ResultsWriter

__all__ = [
    "ResultsStore",
    "ResultsWriter",
    "result_schema",
    "golden_schema",
    "rows_to_table",
    "RESERVED",
    "MANIFEST",
    "JOB_COPY",
    "GOLDEN_DIR",
    "QUARANTINE_DIR",
]
