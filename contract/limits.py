"""The limits of Lambda and API Gateway the project is held to, and the budgets derived from them."""

from __future__ import annotations

MB = 1024 * 1024
# One vCPU per 1,769 MB of memory, up to 6 vCPUs at 10,240 MB.
MB_PER_VCPU = 1769
MAX_VCPUS = 6
# A synchronous invocation's payload; API Gateway allows 10 MB, Lambda 6 MB.
SYNC_PAYLOAD_BYTES = 6 * MB
# Lambda refuses a synchronous invocation whose event is larger than this.
SYNC_REQUEST_BYTES = 6_291_456
# The API's binary media type */* makes API Gateway base64-encode every body into the proxy event
# (4 bytes for every 3), beside ~2 KB of headers and request context: the largest request body the
# API can carry is 3/4 of Lambda's limit less that room: 4,716,288 bytes, about 4.5 MiB.
EVENT_ROOM_BYTES = 3072
API_BODY_BYTES = (SYNC_REQUEST_BYTES - EVENT_ROOM_BYTES) // 4 * 3
# API Gateway's own limit on a request body.
API_GATEWAY_BODY_BYTES = 10 * MB
# Function code plus all its layers, unzipped (a container image may be 10 GB).
ZIP_LIMIT_BYTES = 250 * MB
IMAGE_LIMIT_BYTES = 10 * 1024 * MB
# An on-demand function's init (the handler's import and what it does at module scope).
INIT_TIMEOUT_S = 10.0
# The largest artifact loaded during init. Lambda gives init 10 s (then retries it inside the first
# invocation). One S3 stream from Lambda moves roughly 50-100 MB/s and the model store overlaps 8
# ranged GETs; a 128 MiB artifact is ~2.5 s at 50 MB/s plus its session (0.02-0.1 s per 23 MB
# measured here): under a third of the window, leaving room for a slow S3 or a large graph.
INIT_LOAD_MAX_BYTES = 128 * MB
# API Gateway's default integration timeout.
API_INTEGRATION_TIMEOUT_S = 29.0
# An SQS message body.
SQS_MESSAGE_BYTES = 256 * 1024
# CloudFormation: resources in one stack, and a template's size when deployed from S3.
STACK_RESOURCES = 500
TEMPLATE_BYTES = 1_000_000

# API Gateway: resources (paths) a REST API may have by default (an adjustable quota).
API_RESOURCES = 300
# CloudWatch: widgets a dashboard may hold; alarms an alarm status widget may show.
DASHBOARD_WIDGETS = 500
ALARM_STATUS_ALARMS = 100
