"""Driving a local app: HTTP requests, files into the inbox, queue messages, direct invocations.

:class:`AppClient` works from the state a running ``onnxfn serve`` writes; :func:`connect` uses
that when a server runs, and otherwise starts the app inside the calling process for as long as it
is needed, so ``onnxfn invoke`` works either way.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from onnxfn.errors import UnknownName
from onnxfn.local.assembly import LOCAL_REGION
from onnxfn.local.cloud import LOCAL_CREDENTIALS
from onnxfn.local.runtime import RuntimeOptions
from onnxfn.local.serve import LocalApp, ServeOptions, read_state


@dataclass
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class AppClient:
    def __init__(self, state: Mapping[str, Any], *, started_here: bool = False) -> None:
        self.state = dict(state)
        self.started_here = started_here  # the app runs inside this process, for this client only
        split = urlsplit(self.state["url"])
        self._host, self._port = split.hostname or "127.0.0.1", split.port or 80
        self._connection: http.client.HTTPConnection | None = None
        self._clients: dict[str, Any] = {}

    # --- HTTP ------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        api_key: bool = True,
        signed: bool = True,
    ) -> HttpReply:
        """One request through the local API: the API key added unless ``api_key=False``, signed with
        SigV4 by the local credentials (for routes with ``auth: iam``) unless ``signed=False``."""
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if api_key and self.state.get("api_key"):
            all_headers.setdefault("x-api-key", self.state["api_key"])
        data = body.encode("utf-8") if isinstance(body, str) else body
        if signed and not path.startswith("/2015-03-31/"):
            from onnxfn.local.sigv4 import sign  # botocore's signer, imported when first needed

            url = f"http://{self._host}:{self._port}{path}"
            region = self.state.get("region", LOCAL_REGION)
            all_headers = sign(method, url, all_headers, data, LOCAL_CREDENTIALS, region)
        for attempt in range(2):  # a kept-alive connection the server closed is retried once
            if self._connection is None:
                self._connection = http.client.HTTPConnection(self._host, self._port, timeout=120)
            try:
                self._connection.request(method, path, body=data, headers=all_headers)
                response = self._connection.getresponse()
                payload = response.read()
                return HttpReply(response.status, dict(response.getheaders()), payload)
            except (ConnectionError, http.client.HTTPException):
                self._connection.close()
                self._connection = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    # --- AWS (the embedded moto) -----------------------------------------------------------------

    def aws(self, service: str) -> Any:
        if service not in self._clients:
            import boto3

            self._clients[service] = boto3.session.Session().client(
                service,  # type: ignore[call-overload]
                endpoint_url=self.state["aws_endpoint"],
                region_name=self.state.get("region", "us-east-1"),
                aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                aws_session_token=LOCAL_CREDENTIALS["AWS_SESSION_TOKEN"],
            )
        return self._clients[service]

    def model(self, name: str) -> dict[str, Any]:
        models = self.state["models"]
        if name not in models:
            raise UnknownName(f"no model {name!r} in the app; it has {sorted(models)}")
        return dict(models[name])

    def put_file(self, model: str, path: Path, name: str | None = None) -> str:
        """Upload ``path`` into the model's inbox, as a user dropping a batch file would."""
        return self.put_batch_file(model, path, name)[0]

    def put_batch_file(self, model: str, path: Path, name: str | None = None) -> tuple[str, list[str]]:
        """Upload ``path`` into the model's inbox; its key, and the ids its version may go by (the
        version id S3 notifies, or the ETag where a notification carries none, as moto's do)."""
        entry = self.model(model)
        key = f"{entry['inbox_prefix']}{name or path.name}"
        with path.open("rb") as body:
            response = self.aws("s3").put_object(Bucket=entry["bucket"], Key=key, Body=body)
        ids = [response.get("VersionId"), str(response.get("ETag", "")).strip('"')]
        return key, [i for i in ids if i]

    def execution_progress(self, key: str, versions: list[str]) -> dict[str, Any] | None:
        """The progress of the state machine's execution for a big batch file, once it has one."""
        from contract.big_batch import execution_name
        from onnxfn.local.executions import read_progress

        folder = self.state.get("executions_dir")
        if not folder:
            return None
        for version in versions:
            report = read_progress(Path(folder), execution_name(key, version))
            if report is not None:
                return report
        return None

    def wait_for_object(self, bucket: str, key: str, timeout_s: float) -> bytes | None:
        s3 = self.aws("s3")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(s3.exceptions.NoSuchKey):
                return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            time.sleep(0.1)
        return None

    def wait_for_batch(
        self,
        model: str,
        inbox_key: str,
        timeout_s: float = 120,
        on_wait: Any = None,
        versions: list[str] | None = None,
    ) -> dict[str, Any] | None:
        """The summary the batch function writes for ``inbox_key``, once it and the output it names exist.

        The batch function writes the summary first and commits the output last (an output that
        exists is complete), so a summary can be visible a moment before its output. ``versions``
        (from :meth:`put_batch_file`): wait for the summary of that upload, not an earlier one's.
        """
        entry = self.model(model)
        name = inbox_key[len(entry["inbox_prefix"]) :]
        deadline = time.monotonic() + timeout_s
        summary_key = f"{entry['outbox_prefix']}{name}.summary.json"
        raw = None
        while raw is None and time.monotonic() < deadline:  # ``on_wait`` is called between looks
            raw = self.wait_for_object(entry["bucket"], summary_key, min(0.5, max(0.0, deadline - time.monotonic())))
            if raw is not None and versions and json.loads(raw).get("source_version") not in versions:
                raw = None  # an earlier version's summary: this one's is still to come
                time.sleep(0.1)
            if raw is None and on_wait is not None:
                on_wait()
        if raw is None:
            return None
        summary = dict(json.loads(raw))
        output_key = summary.get("output_key")
        left = max(0.0, deadline - time.monotonic())
        if output_key and self.wait_for_object(entry["bucket"], output_key, left) is None:
            return None
        return summary

    def send_message(self, model: str, body: str, attributes: Mapping[str, str] | None = None) -> str:
        """Queue one inference request for the model's worker; returns the message id."""
        entry = self.model(model)
        extra = {k: {"DataType": "String", "StringValue": v} for k, v in (attributes or {}).items()}
        sent = self.aws("sqs").send_message(
            QueueUrl=entry["requests_queue_url"], MessageBody=body, MessageAttributes=extra
        )
        return str(sent["MessageId"])

    def wait_for_result(self, model: str, message_id: str, timeout_s: float = 60) -> tuple[bool, Any] | None:
        """``(ok, document)`` once the worker wrote the result (or the error) of ``message_id``."""
        entry = self.model(model)
        s3 = self.aws("s3")
        deadline = time.monotonic() + timeout_s
        prefix = f"{entry['results_prefix']}{message_id}"
        while time.monotonic() < deadline:
            for suffix, ok in ((".json", True), (".error.json", False)):
                with contextlib.suppress(s3.exceptions.NoSuchKey):
                    body = s3.get_object(Bucket=entry["bucket"], Key=prefix + suffix)["Body"].read()
                    return ok, json.loads(body)
            time.sleep(0.1)
        return None

    def invoke_function(self, name: str, event: Any) -> tuple[bool, Any]:
        """A direct invocation through the local Lambda Invoke API: ``(ok, payload or error)``."""
        reply = self.request("POST", f"/2015-03-31/functions/{name}/invocations", json.dumps(event), api_key=False)
        if reply.status != 200:
            return False, reply.json()
        return "X-Amz-Function-Error" not in reply.headers, reply.json()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


@contextlib.contextmanager
def connect(
    state_file: Path | None, app_dir: Path = Path("cdk.out"), runtime: RuntimeOptions | None = None
) -> Iterator[AppClient]:
    """A client for the running app, or for one started here (with ``runtime``) and stopped on exit."""
    state = read_state(state_file) if state_file is not None else None
    if state is not None:
        client = AppClient(state)
        try:
            yield client
        finally:
            client.close()
        return
    app = LocalApp(ServeOptions(app_dir=app_dir, port=0, state_file=None, runtime=runtime or RuntimeOptions())).start()
    client = AppClient(app.state(), started_here=True)
    try:
        yield client
    finally:
        client.close()
        app.stop()
