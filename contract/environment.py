"""The environment variables a function reads: every name once, with its modes and defaults.

``stacks/`` sets them by these names; ``handlers/runtime/settings.py`` reads them; the local
runtime and the tests set them the same way.
"""

from __future__ import annotations

MODEL_NAME = "MODEL_NAME"
MODEL_BUCKET = "MODEL_BUCKET"
MODEL_PREFIX = "MODEL_PREFIX"
MANIFEST_SHA256 = "MANIFEST_SHA256"
MANIFEST_VERSION_ID = "MANIFEST_VERSION_ID"
LOAD_MODE = "LOAD_MODE"
MAX_REQUEST_BYTES = "MAX_REQUEST_BYTES"
INTRA_OP_THREADS = "ORT_INTRA_OP_THREADS"
SERVICE_NAME = "POWERTOOLS_SERVICE_NAME"
METRICS_NAMESPACE = "POWERTOOLS_METRICS_NAMESPACE"
LOG_LEVEL = "POWERTOOLS_LOG_LEVEL"
TRACE_DISABLED = "POWERTOOLS_TRACE_DISABLED"
CATALOG_KEY = "CATALOG_KEY"  # the function serving /swagger: the S3 key of the API's catalog (contract/catalog.py)
API_AUTH = "API_AUTH"  # how callers authenticate to the API: one of API_AUTH_MODES

# Event-driven functions (S3 batch files, request queue): where inputs and outputs live.
DATA_BUCKET = "DATA_BUCKET"
INBOX_PREFIX = "INBOX_PREFIX"
OUTBOX_PREFIX = "OUTBOX_PREFIX"
RESULTS_PREFIX = "RESULTS_PREFIX"
REQUESTS_PREFIX = "REQUESTS_PREFIX"
REPLY_QUEUES = "REPLY_QUEUES"  # comma-separated ARNs of the queues answers may be sent to
# The batch function: files above the threshold go to the model's state machine (contract/big_batch.py).
BIG_BATCH_STATE_MACHINE = "BIG_BATCH_STATE_MACHINE"  # its ARN; unset: every file on the small path
BIG_BATCH_ROWS = "BIG_BATCH_ROWS"  # records (estimated from the file's first MiB) from which a file goes there
BIG_BATCH_BYTES = "BIG_BATCH_BYTES"  # or bytes, whichever is reached first; unset: rows only
BIG_BATCH_FORMATS = "BIG_BATCH_FORMATS"  # comma-separated: jsonl, and csv for a fixed-width tabular model

# Set by Lambda itself.
FUNCTION_MEMORY_MB = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"
INITIALIZATION_TYPE = "AWS_LAMBDA_INITIALIZATION_TYPE"  # on-demand | provisioned-concurrency | snap-start

# What a function's LOAD_MODE may be. The configuration's "auto" (its default) becomes one of them at
# synth: eager when the artifact fits the init window (limits.INIT_LOAD_MAX_BYTES), lazy otherwise.
LOAD_MODES = ("lazy", "eager")
CONFIG_LOAD_MODES = ("auto", *LOAD_MODES)
API_AUTH_MODES = ("api_key", "iam")  # an API key in x-api-key, or SigV4-signed requests
DEFAULT_SERVICE = "onnxfn"
DEFAULT_NAMESPACE = "onnxfn"
