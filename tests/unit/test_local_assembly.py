"""Reading a cloud assembly, resolving its references, routing as API Gateway, EMF → Prometheus."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from onnxfn.local.assembly import AssemblyError, Resolver, RouteSpec, load_assembly
from onnxfn.local.gateway import Router
from onnxfn.local.metrics import MetricsRegistry
from tests.serve import faulty_app


@pytest.fixture
def assembly(tmp_path):
    return load_assembly(faulty_app.build(tmp_path / "cdk.out"))


def test_functions_routes_queues_and_mappings_come_from_the_template(assembly):
    assert assembly.stack_name == "Faulty"
    assert {f.logical_id for f in assembly.functions} == {"Fn", "Slow"}
    fn = assembly.function("Fn")
    assert (fn.handler, fn.memory_mb, fn.timeout_s) == ("faulty.lambda_handler", 256, 2)
    assert (fn.code_dir / "faulty.py").exists()
    assert fn.environment["QUEUE_ARN"] == {"Fn::GetAtt": ["Jobs", "Arn"]}
    routes = {(r.method, r.resource_path): r for r in assembly.api.routes}
    assert set(routes) == {("ANY", "/{proxy+}"), ("GET", "/slow"), ("GET", "/items/{id}")}
    assert routes[("GET", "/items/{id}")].api_key_required
    assert routes[("GET", "/slow")].function_id == "Slow"
    assert assembly.api.stage == "test" and assembly.api.binary_media_types == ("application/octet-stream",)
    jobs = assembly.queue("Jobs")
    assert (jobs.dead_letter_id, jobs.max_receive_count, jobs.visibility_timeout_s) == ("Dead", 2, 30)
    (source,) = assembly.event_sources
    assert (source.queue_id, source.function_id, source.batch_size) == ("Jobs", "Fn", 5)
    assert source.report_batch_item_failures and source.batching_window_s == 1


def test_a_folder_without_an_assembly_is_a_clear_error(tmp_path):
    with pytest.raises(AssemblyError, match="make synth"):
        load_assembly(tmp_path)


def test_resolver_handles_ref_getatt_join_sub_and_pseudo_parameters():
    resolver = Resolver(refs={"Bucket": "b-1"}, attributes={("Queue", "Arn"): "arn:q"}, stack_name="S")
    value = {
        "Fn::Join": [
            "/",
            [{"Ref": "Bucket"}, {"Fn::GetAtt": ["Queue", "Arn"]}, {"Fn::Sub": "${AWS::Region}-${Bucket}-${Queue.Arn}"}],
        ]
    }
    assert resolver.resolve(value) == "b-1/arn:q/us-east-1-b-1-arn:q"
    assert resolver.resolve({"Fn::Sub": ["${x}!", {"x": {"Ref": "AWS::StackName"}}]}) == "S!"
    assert resolver.resolve({"Ref": "Missing"}) == "<unresolved Missing>"
    assert resolver.environment({"A": {"Ref": "Bucket"}, "B": 3}) == {"A": "b-1", "B": "3"}


def _route(method: str, path: str) -> RouteSpec:
    return RouteSpec(method, path, f"{method} {path}", False, "NONE")


def test_router_follows_api_gateway_precedence():
    router = Router(
        [
            _route("GET", "/v2/models/digits"),
            _route("ANY", "/v2/models/digits/{proxy+}"),
            _route("POST", "/v2/models/digits/infer"),
            _route("GET", "/items/{id}"),
            _route("GET", "/items/special"),
            _route("POST", "/v1/models/digits:predict"),
        ]
    )

    def target(method: str, path: str) -> tuple[str, dict] | None:
        found = router.match(method, path)
        return (found[0].function_id, found[1]) if found else None

    assert target("POST", "/v2/models/digits/infer") == ("POST /v2/models/digits/infer", {})
    assert target("GET", "/v2/models/digits/infer") == ("ANY /v2/models/digits/{proxy+}", {"proxy": "infer"})
    assert target("GET", "/v2/models/digits/versions/1/ready")[1] == {"proxy": "versions/1/ready"}
    assert target("GET", "/items/special") == ("GET /items/special", {})
    assert target("GET", "/items/7") == ("GET /items/{id}", {"id": "7"})
    assert target("GET", "/items/a%20b") == ("GET /items/{id}", {"id": "a b"})
    assert target("POST", "/v1/models/digits:predict")[0] == "POST /v1/models/digits:predict"
    assert target("GET", "/v1/models/digits:predict") is None  # no method there: 403, as API Gateway
    assert target("GET", "/nowhere") is None
    assert target("DELETE", "/items/7") is None


def test_emf_lines_become_prometheus_counters_and_summaries():
    registry = MetricsRegistry()
    emf = {
        "_aws": {
            "Timestamp": 1,
            "CloudWatchMetrics": [
                {
                    "Namespace": "onnxfn",
                    "Dimensions": [["service"]],
                    "Metrics": [{"Name": "InferenceMs", "Unit": "Milliseconds"}, {"Name": "Rows", "Unit": "Count"}],
                }
            ],
        },
        "service": "onnxfn-digits",
        "InferenceMs": [2.0, 4.0],
        "Rows": 5,
    }
    assert registry.collect_emf("fn", json.dumps(emf))
    assert not registry.collect_emf("fn", '{"level": "INFO", "message": "not metrics"}')
    assert not registry.collect_emf("fn", '{"_aws": broken')
    families = {f.name: f for f in text_string_to_metric_families(registry.render().decode())}
    latency = {s.name: s.value for s in families["onnxfn_inference_ms_milliseconds"].samples}
    assert latency == {"onnxfn_inference_ms_milliseconds_count": 2.0, "onnxfn_inference_ms_milliseconds_sum": 6.0}
    (rows,) = [s for s in families["onnxfn_rows"].samples if s.name == "onnxfn_rows_total"]
    assert rows.value == 5.0 and rows.labels == {"function": "fn", "service": "onnxfn-digits"}
