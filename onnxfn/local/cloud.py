"""The embedded AWS: moto in server mode on 127.0.0.1, provisioned from the cloud assembly.

Buckets, queues (with their redrive policies), bucket notifications, the artifact deployments and
the state machines are created the way CloudFormation and CDK's custom resources would create them; a
:class:`~onnxfn.local.assembly.Resolver` then knows every physical name and ARN, so each function's
environment resolves to the local resources.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from contract.environment import MODEL_NAME
from onnxfn.local.assembly import LOCAL_ACCOUNT, LOCAL_REGION, CloudAssembly, FunctionSpec, Resolver, local_name
from onnxfn.local.executions import LocalStateMachine, create_state_machines
from onnxfn.local.functions import FunctionRuntime
from onnxfn.local.runtime import HOST_ARCH, ROOT, LaunchPlan, RuntimeOptions, host_layer
from onnxfn.local.runtime import plan as runtime_plan

# Credentials moto accepts and no real AWS endpoint would: the local app never reaches AWS.
LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "onnxfn-local",
    "AWS_SECRET_ACCESS_KEY": "onnxfn-local",
    "AWS_SESSION_TOKEN": "onnxfn-local",
}


def local_aws_environment(endpoint: str) -> dict[str, str]:
    """Environment that sends every AWS SDK call to the embedded moto server."""
    return {
        **LOCAL_CREDENTIALS,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": LOCAL_REGION,
        "AWS_DEFAULT_REGION": LOCAL_REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        # Never read a developer's AWS config or credentials files.
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


@dataclass
class EmbeddedAws:
    """A running moto server and boto3 clients bound to it."""

    host: str = "127.0.0.1"
    port: int = 0
    _server: Any = field(default=None, repr=False)
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)

    def start(self) -> EmbeddedAws:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log line per AWS call
        self._server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self._server.start()
        self.port = int(self._server._server.server_port)
        return self

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client(self, service: str) -> Any:
        if service not in self._clients:
            import boto3
            from botocore.config import Config

            self._clients[service] = boto3.session.Session().client(
                service,  # type: ignore[call-overload]
                endpoint_url=self.endpoint,
                region_name=LOCAL_REGION,
                aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                aws_session_token=LOCAL_CREDENTIALS["AWS_SESSION_TOKEN"],
                config=Config(retries={"max_attempts": 2, "mode": "standard"}, max_pool_connections=32),
            )
        return self._clients[service]

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


@dataclass
class Provisioned:
    """Physical names of what was created, and the resolver that knows them."""

    resolver: Resolver
    buckets: dict[str, str]  # logical id → bucket name
    queue_urls: dict[str, str]  # logical id → queue URL
    queue_arns: dict[str, str]
    uploaded: dict[str, int]  # deployment logical id → objects uploaded
    state_machines: dict[str, LocalStateMachine] = field(default_factory=dict)


def _arn(service: str, resource: str) -> str:
    return f"arn:aws:{service}:{LOCAL_REGION}:{LOCAL_ACCOUNT}:{resource}"


def _files_of(source: Path) -> list[tuple[str, bytes]]:
    if source.is_dir():
        return [(p.relative_to(source).as_posix(), p.read_bytes()) for p in sorted(source.rglob("*")) if p.is_file()]
    with zipfile.ZipFile(source) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist() if not info.is_dir()]


def provision(aws: EmbeddedAws, assembly: CloudAssembly) -> Provisioned:
    """Create the assembly's buckets, queues, notifications and deployed artifacts in moto."""
    s3, sqs = aws.client("s3"), aws.client("sqs")
    resolver = Resolver(stack_name=assembly.stack_name)
    buckets: dict[str, str] = {}
    for logical_id in assembly.buckets:
        name = local_name(assembly.stack_name, logical_id, 63, lower=True)
        s3.create_bucket(Bucket=name)
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        buckets[logical_id] = name
        resolver.refs[logical_id] = name
        resolver.attributes[(logical_id, "Arn")] = f"arn:aws:s3:::{name}"
        resolver.attributes[(logical_id, "DomainName")] = f"{name}.s3.amazonaws.com"
    urls: dict[str, str] = {}
    arns: dict[str, str] = {}
    for queue in assembly.queues:  # dead-letter queues first: a redrive policy names an existing queue
        if queue.dead_letter_id is not None:
            continue
        urls[queue.logical_id] = sqs.create_queue(QueueName=queue.name, Attributes=dict(queue.attributes))["QueueUrl"]
        arns[queue.logical_id] = _arn("sqs", queue.name)
    for queue in assembly.queues:
        if queue.dead_letter_id is None:
            continue
        redrive = {"deadLetterTargetArn": arns[queue.dead_letter_id], "maxReceiveCount": queue.max_receive_count}
        attributes = {
            **queue.attributes,
            "VisibilityTimeout": str(queue.visibility_timeout_s),
            "RedrivePolicy": json.dumps(redrive),
        }
        urls[queue.logical_id] = sqs.create_queue(QueueName=queue.name, Attributes=attributes)["QueueUrl"]
        arns[queue.logical_id] = _arn("sqs", queue.name)
    for logical_id, url in urls.items():
        resolver.refs[logical_id] = url
        resolver.attributes[(logical_id, "Arn")] = arns[logical_id]
        resolver.attributes[(logical_id, "QueueUrl")] = url
        resolver.attributes[(logical_id, "QueueName")] = url.rsplit("/", 1)[-1]
    by_bucket: dict[str, list[dict[str, Any]]] = {}
    for note in assembly.notifications:
        rules = [{"Name": "prefix", "Value": note.prefix}] if note.prefix else []
        if note.suffix:
            rules.append({"Name": "suffix", "Value": note.suffix})
        config: dict[str, Any] = {"QueueArn": arns[note.queue_id], "Events": list(note.events)}
        if rules:
            config["Filter"] = {"Key": {"FilterRules": rules}}
        by_bucket.setdefault(note.bucket_id, []).append(config)
    for bucket_id, configs in by_bucket.items():
        s3.put_bucket_notification_configuration(
            Bucket=buckets[bucket_id], NotificationConfiguration={"QueueConfigurations": configs}
        )
    uploaded: dict[str, int] = {}
    for deployment in assembly.deployments:
        count = 0
        for source in deployment.sources:
            for key, body in _files_of(source):
                s3.put_object(Bucket=buckets[deployment.bucket_id], Key=f"{deployment.prefix}{key}", Body=body)
                count += 1
        uploaded[deployment.logical_id] = count
    _sdk_calls(s3, assembly, resolver)
    for spec in assembly.functions:
        resolver.refs[spec.logical_id] = spec.name
        resolver.attributes[(spec.logical_id, "Arn")] = _arn("lambda", f"function:{spec.name}")
    machines = create_state_machines(aws.client("stepfunctions"), assembly, resolver, urls)
    return Provisioned(resolver, buckets, urls, arns, uploaded, machines)


def _sdk_calls(s3: Any, assembly: CloudAssembly, resolver: Resolver) -> None:
    """The stack's S3 ``headObject`` lookups (the manifest's version id), run as CDK's AwsCustomResource
    runs them after the upload; their outputs become ``Fn::GetAtt`` attributes. Other calls stay
    unresolved and show up as such in the environment."""
    for logical_id, create in assembly.sdk_calls.items():
        resolved = resolver.resolve(create)
        call = json.loads(resolved) if isinstance(resolved, str) else resolved
        if not isinstance(call, dict) or call.get("service") not in ("S3", "@aws-sdk/client-s3"):
            continue
        if str(call.get("action", "")).lower() != "headobject":
            continue
        parameters = call.get("parameters", {})
        head = s3.head_object(Bucket=parameters["Bucket"], Key=parameters["Key"])
        for path in call.get("outputPaths", []):
            if head.get(path) is not None:
                resolver.attributes[(logical_id, path)] = str(head[path])


def lambda_environment(
    name: str, memory_mb: int, runtime: str, handler: str, code_dir: Path, arn: str
) -> dict[str, str]:
    """The variables Lambda itself sets in a function's environment (locally: no X-Ray daemon)."""
    return {
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{runtime}",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "LAMBDA_TASK_ROOT": str(code_dir.resolve()),
        "LAMBDA_RUNTIME_DIR": str(code_dir.resolve()),
        "ONNXFN_LOCAL_FUNCTION_ARN": arn,
        "_HANDLER": handler,
        "TZ": ":UTC",
        "PYTHONDONTWRITEBYTECODE": "1",
        # No X-Ray daemon runs locally: Powertools' tracer is switched off, as under SAM local.
        "POWERTOOLS_TRACE_DISABLED": "true",
    }


def pipeline_requirements(spec: FunctionSpec) -> tuple[str, ...]:
    """What the function's pipeline needs besides the function layer: the image's
    ``layers/requirements-extra.txt``, or the packages of a zip function's further layers."""
    if spec.packaging == "image":
        listed = spec.code_dir / "layers" / "requirements-extra.txt"
        lines = listed.read_text().splitlines() if listed.exists() else []
        return tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))
    packages: list[str] = []
    for layer in spec.layer_dirs[1:]:
        marker = layer / "onnxfn-layer.json"
        if marker.exists():
            packages += [f"{n}=={v}" for n, v in json.loads(marker.read_text()).get("packages", {}).items()]
    return tuple(packages)


def launch_plan(spec: FunctionSpec, options: RuntimeOptions) -> LaunchPlan:
    """How ``spec`` runs here: its runtime's interpreter with its staged code and layer.

    An image function (same pinned requirements and handlers, on the Lambda base image) runs with
    the layer built from those requirements; so does a function of another architecture, whose own
    wheels cannot load on this machine. The plan's notes say so.
    """
    layers = list(spec.layer_dirs)
    notes = []
    if not options.dev and (spec.packaging == "image" or spec.architecture != HOST_ARCH):
        layers = [host_layer(spec.runtime)]
        extra = pipeline_requirements(spec)
        if extra:
            from stacks.assets import requirements_file

            layers.append(host_layer(spec.runtime, requirements_file(ROOT, extra)))
        if spec.packaging == "image":
            notes.append("an image function runs with the layer built from the image's pinned requirements")
    plan = runtime_plan(spec.runtime, spec.architecture, spec.memory_mb, spec.code_dir.resolve(), layers, options)
    return replace(plan, notes=(*plan.notes, *notes))


def function_runtimes(
    assembly: CloudAssembly, provisioned: Provisioned, endpoint: str, options: RuntimeOptions | None = None
) -> list[FunctionRuntime]:
    """Each served function with its environment resolved, Lambda's own variables set, and its launch plan."""
    options = options or RuntimeOptions()
    runtimes = []
    for spec in assembly.functions:
        environment = provisioned.resolver.environment(spec.environment)
        arn = _arn("lambda", f"function:{spec.name}")
        lambda_env = lambda_environment(spec.name, spec.memory_mb, spec.runtime, spec.handler, spec.code_dir, arn)
        inherited = {k: v for k, v in _inherited_environment().items() if k not in environment}
        runtimes.append(
            FunctionRuntime(
                logical_id=spec.logical_id,
                name=spec.name,
                handler=spec.handler,
                code_dir=spec.code_dir.resolve(),
                environment={**inherited, **environment, **lambda_env, **local_aws_environment(endpoint)},
                memory_mb=spec.memory_mb,
                timeout_s=float(spec.timeout_s),
                arn=arn,
                launch=launch_plan(spec, options),
                kind=spec.kind,
                model=environment.get(MODEL_NAME, ""),
            )
        )
    return runtimes


def _inherited_environment() -> dict[str, str]:
    """The few host variables a Python process needs (PATH, locale); never credentials."""
    keep = ("PATH", "LANG", "LC_ALL", "HOME", "VIRTUAL_ENV", "OMP_NUM_THREADS", "SYSTEMROOT")
    return {key: os.environ[key] for key in keep if key in os.environ}
