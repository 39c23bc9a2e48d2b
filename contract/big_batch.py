"""The big-batch protocol: what the batch function and its Distributed Map state machine pass each other.

A batch file above the threshold is handed to the model's state machine. The state machine reads the
file's records (JSON Lines, or CSV with the headers given here), batches them and invokes the batch
function with ``{"Items": [{"index": i, "row": record}, ...], "BatchInput": {...}}``; each call writes
one part under the run's prefix. A last call, ``{"assemble": {...}}``, joins the parts into the outbox
files the small path writes. The stacks write the definition and the handlers read the payloads by
these names; ``onnxfn serve`` runs the same definition.
"""

from __future__ import annotations

import hashlib
import re

ITEMS = "Items"  # a Map child's batch of records
BATCH_INPUT = "BatchInput"  # what every batch of one run shares: RUN_FIELDS
ASSEMBLE = "assemble"  # the last step: join the parts
FAILURE = "failure"  # set on the assemble payload when the Map failed: {"Error": ..., "Cause": ...}
INDEX = "index"  # an item's 0-based position in the file (the Map's $$.Map.Item.Index)
ROW = "row"  # the record itself (the Map's $$.Map.Item.Value)
# The execution's input: ``version`` is the S3 version id the Map reads (the app's bucket is
# versioned), ``source_version`` what the outbox files record.
RUN_FIELDS = ("run", "bucket", "key", "version", "source_version", "format")

FORMATS = ("jsonl", "csv")  # what a Distributed Map reads; .npy/.npz stay on the small path
BATCH_INPUT_BYTES = 240 * 1024  # Step Functions passes at most 256 KiB to a child execution
DEFAULT_ITEMS_PER_BATCH = 1000
DEFAULT_MAX_CONCURRENCY = 10
EXECUTION_NAME_CHARS = 80
PART_TAG = ("onnxfn-part", "true")  # parts carry it; the bucket expires tagged objects after PART_DAYS
PART_DAYS = 7  # a run that never assembled (its execution failed outright, or was stopped) leaves parts


def csv_headers(columns: int) -> list[str]:
    """The header names the CSV reader is given (``c0``, ``c1``, ...): a file's first row is data, as
    on the small path."""
    return [f"c{i}" for i in range(columns)]


def execution_name(key: str, version: str) -> str:
    """One execution per source version: Step Functions refuses a second start of the same name."""
    digest = hashlib.sha256(f"{key}\0{version}".encode()).hexdigest()[:24]
    stem = re.sub(r"[^A-Za-z0-9_-]", "-", key.rsplit("/", 1)[-1])[: EXECUTION_NAME_CHARS - len(digest) - 1]
    return f"{stem}-{digest}"


def parts_prefix(outbox_prefix: str, run: str) -> str:
    """Where one run's parts are written; removed once assembled."""
    return f"{outbox_prefix}.parts/{run}/"
