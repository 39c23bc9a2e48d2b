"""Batch files: one S3 object scored into the outbox (``files.process_object``), one module per format."""

from handlers.runtime.batch.files import FORMATS, SOURCE_VERSION, process_object
from handlers.runtime.batch.sink import FileSummary

__all__ = ["FORMATS", "SOURCE_VERSION", "FileSummary", "process_object"]
