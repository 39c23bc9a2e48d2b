"""S3 objects written all at once or not at all, and read as a stream.

``ObjectWriter`` buffers, switches to a multipart upload once the buffer passes the part size, and
makes the object exist only when ``commit`` completes the upload. A run that crashes before that
leaves no object (an incomplete upload, invisible to readers and aborted by the bucket's lifecycle).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from contract.limits import SYNC_PAYLOAD_BYTES as DEFAULT_MAX_REQUEST_BYTES
from handlers.runtime.errors import InvalidInput

PART_BYTES = 8 * 1024 * 1024  # S3 parts must be at least 5 MiB, except the last
MAX_LINE_BYTES = DEFAULT_MAX_REQUEST_BYTES  # a record is at most what one API request may carry


class ObjectWriter:
    """Write ``key`` in ``bucket`` atomically: nothing is visible before ``commit``."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        key: str,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
        part_bytes: int = PART_BYTES,
    ) -> None:
        self._s3, self.bucket, self.key = s3, bucket, key
        self._content_type = content_type
        self._metadata = dict(metadata or {})
        self._part_bytes = part_bytes
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self.bytes_written = 0

    def write(self, data: bytes) -> None:
        self._buffer += data
        self.bytes_written += len(data)
        if len(self._buffer) >= self._part_bytes:
            self._flush_part()

    def _flush_part(self) -> None:
        if self._upload_id is None:
            self._upload_id = self._s3.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, ContentType=self._content_type, Metadata=self._metadata
            )["UploadId"]
        number = len(self._parts) + 1
        response = self._s3.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self._upload_id, PartNumber=number, Body=bytes(self._buffer)
        )
        self._parts.append({"PartNumber": number, "ETag": response["ETag"]})
        self._buffer.clear()

    def commit(self) -> None:
        """Make the object exist (one PUT when small, else complete the multipart upload)."""
        if self._upload_id is None:
            self._s3.put_object(
                Bucket=self.bucket,
                Key=self.key,
                Body=bytes(self._buffer),
                ContentType=self._content_type,
                Metadata=self._metadata,
            )
            return
        if self._buffer:
            self._flush_part()
        self._s3.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self._upload_id, MultipartUpload={"Parts": self._parts}
        )
        self._upload_id = None

    def abort(self) -> None:
        if self._upload_id is not None:
            self._s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id)
            self._upload_id = None


def iter_lines(body: Any, chunk_bytes: int = 1024 * 1024, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """Lines of a streaming body without loading it whole (``\\n`` or ``\\r\\n`` endings).

    A line longer than ``max_line_bytes`` fails the file: held whole and copied on every chunk, one
    line without an end would take the function's memory and, quadratically, its time.
    """
    pending = b""
    count = 0
    for chunk in body.iter_chunks(chunk_bytes):
        pending += chunk
        lines = pending.split(b"\n")
        pending = lines.pop()
        if len(pending) > max_line_bytes:
            raise InvalidInput(
                f"line {count + len(lines) + 1} is over {max_line_bytes} bytes; "
                f"expected records of at most {max_line_bytes} bytes, one per line"
            )
        count += len(lines)
        for line in lines:
            yield line.rstrip(b"\r")
    if pending:
        yield pending.rstrip(b"\r")


def head(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """The object's metadata, or None when it does not exist."""
    try:
        response: dict[str, Any] = s3.head_object(Bucket=bucket, Key=key)
    except s3.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return response
