"""The model store: nothing fetched at init, one fetch per file across warm invocations, failures
never cached, corrupt bytes never served, one load under concurrent first requests."""

from __future__ import annotations

import hashlib
import importlib
import sys
import threading

import pytest

from tests.conftest import BUCKET, artifact

DIGITS_BODY = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]}


def test_import_and_health_make_no_s3_call(serve):
    served = serve("digits")
    sys.modules.pop("handlers.api", None)
    importlib.import_module("handlers.api")
    served.client.get("/v2/health/live")
    served.client.get("/v2")
    assert served.get_calls == []
    assert served.store.ready is False


def test_one_get_per_file_across_warm_invocations(serve):
    served = serve("digits")
    first = served.client.post("/v2/models/digits/infer", DIGITS_BODY)
    assert first.status == 200
    prefix = served.environment["MODEL_PREFIX"]
    assert sorted(served.get_calls) == sorted([f"{prefix}manifest.json", f"{prefix}model.onnx"])
    for _ in range(25):
        assert served.client.post("/v2/models/digits/infer", DIGITS_BODY).status == 200
    assert len(served.get_calls) == 2  # warm invocations reuse the session


def test_minilm_fetches_model_and_tokenizer_once(serve):
    served = serve("minilm")
    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hello"]}]}
    for _ in range(5):
        assert served.client.post("/v2/models/minilm/infer", body).status == 200
    from handlers.runtime.model_store import RANGE_PART_BYTES

    model_bytes = (artifact("minilm") / "model.onnx").stat().st_size
    ranges = -(-model_bytes // RANGE_PART_BYTES)  # the model arrives in parallel ranged GETs
    assert ranges > 1
    assert len(served.get_calls) == 2 + ranges
    assert {key.rsplit("/", 1)[1] for key in served.get_calls} == {"manifest.json", "model.onnx", "tokenizer.json"}


def test_s3_error_gives_503_is_not_cached_and_recovers(serve, s3):
    served = serve("digits", private=True)
    key = served.environment["MODEL_PREFIX"] + "model.onnx"
    original = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    s3.delete_object(Bucket=BUCKET, Key=key)  # a delete marker: GetObject now fails with NoSuchKey
    failed = served.client.post("/v2/models/digits/infer", DIGITS_BODY)
    assert failed.status == 503
    assert "could not be loaded" in failed.json()["error"] and "retries" in failed.json()["error"]
    assert "Traceback" not in failed.body.decode()
    again = served.client.post("/v2/models/digits/infer", DIGITS_BODY)
    assert again.status == 503  # tried again, not a cached failure
    assert served.get_calls.count(key) == 2
    s3.put_object(Bucket=BUCKET, Key=key, Body=original)
    assert served.client.post("/v2/models/digits/infer", DIGITS_BODY).status == 200
    assert served.store.ready


def test_wrong_sha256_is_never_served_and_recovers(serve, s3):
    served = serve("digits", private=True)
    key = served.environment["MODEL_PREFIX"] + "model.onnx"
    original = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    corrupt = bytearray(original)
    corrupt[len(corrupt) // 2] ^= 0xFF
    s3.put_object(Bucket=BUCKET, Key=key, Body=bytes(corrupt))
    for _ in range(2):
        reply = served.client.post("/v2/models/digits/infer", DIGITS_BODY)
        assert reply.status == 503
        assert "sha256" in reply.json()["error"]
    assert not served.store.ready
    s3.put_object(Bucket=BUCKET, Key=key, Body=original)
    assert served.client.post("/v2/models/digits/infer", DIGITS_BODY).status == 200


def test_tampered_manifest_is_rejected_by_its_pin(serve, s3):
    served = serve("digits", {"MANIFEST_VERSION_ID": ""}, private=True)  # pinned by sha256 alone
    key = served.environment["MODEL_PREFIX"] + "manifest.json"
    manifest = (artifact("digits") / "manifest.json").read_bytes()
    s3.put_object(Bucket=BUCKET, Key=key, Body=manifest.replace(b'"max_batch": 1024', b'"max_batch": 9999'))
    reply = served.client.get("/v2/models/digits")
    assert reply.status == 503
    assert "does not match the pinned" in reply.json()["error"]
    s3.put_object(Bucket=BUCKET, Key=key, Body=manifest)
    assert served.client.get("/v2/models/digits").status == 200
    assert hashlib.sha256(manifest).hexdigest() == served.environment["MANIFEST_SHA256"]


def test_pinned_version_id_is_fetched_even_after_overwrite(serve, s3):
    served = serve("digits", private=True)
    version_id = served.environment.get("MANIFEST_VERSION_ID")
    assert version_id, "the test bucket is versioned, so the upload pins a version id"
    key = served.environment["MODEL_PREFIX"] + "manifest.json"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"{}")  # a newer version that is not the deployed one
    assert served.client.get("/v2/models/digits").status == 200


def test_a_pinned_version_that_is_gone_falls_back_to_the_current_one_still_checked_by_sha256(serve, s3):
    served = serve("digits", private=True)
    key = served.environment["MODEL_PREFIX"] + "manifest.json"
    version_id = served.environment["MANIFEST_VERSION_ID"]
    manifest = s3.get_object(Bucket=BUCKET, Key=key, VersionId=version_id)["Body"].read()
    s3.put_object(Bucket=BUCKET, Key=key, Body=manifest)  # the upload ran again: same bytes, a new version
    s3.delete_object(Bucket=BUCKET, Key=key, VersionId=version_id)  # the lifecycle expired the pinned one
    assert served.client.get("/v2/models/digits").status == 200
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"{}")  # and the current one is still held to the pin
    fresh = serve("digits", dict(served.environment))  # a new cold start of the same function
    reply = fresh.client.get("/v2/models/digits")
    assert reply.status == 503 and "does not match the pinned" in reply.json()["error"]


def test_concurrent_first_requests_load_once(serve):
    served = serve("digits")
    results: list[int] = []
    barrier = threading.Barrier(8)

    def request() -> None:
        barrier.wait()
        results.append(served.client.post("/v2/models/digits/infer", DIGITS_BODY).status)

    threads = [threading.Thread(target=request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 8
    assert len(served.get_calls) == 2


@pytest.mark.parametrize("entry", ["handlers.api", "handlers.s3_batch", "handlers.queue_worker"])
def test_eager_mode_loads_and_warms_up_at_init_in_every_entry_point(serve, monkeypatch, entry):
    from handlers.runtime import model_store

    served = serve("digits")
    runs: list[int] = []
    original = model_store.build_pipeline

    def counting(*args, **kwargs):
        pipeline = original(*args, **kwargs)
        run = pipeline.run
        pipeline.run = lambda inputs, outputs: runs.append(1) or run(inputs, outputs)
        return pipeline

    monkeypatch.setattr(model_store, "build_pipeline", counting)
    monkeypatch.setenv("LOAD_MODE", "eager")
    sys.modules.pop(entry, None)
    importlib.import_module(entry)
    assert served.store.ready
    assert len(served.get_calls) == 2
    assert runs == [1]  # the warm-up inference ran during init
    sys.modules.pop(entry, None)


def test_a_failed_load_at_init_is_not_fatal_and_the_first_request_retries(serve, s3, monkeypatch):
    served = serve("digits", {"MANIFEST_SHA256": "0" * 64})
    monkeypatch.setenv("LOAD_MODE", "eager")
    sys.modules.pop("handlers.api", None)
    importlib.import_module("handlers.api")  # init survives the integrity failure
    assert served.store.ready is False
    reply = served.client.post("/v2/models/digits/infer", DIGITS_BODY)
    assert reply.status == 503 and "sha256" in reply.json()["error"]
    sys.modules.pop("handlers.api", None)


def test_missing_bucket_setting_is_503(serve):
    served = serve("digits", {"MODEL_BUCKET": ""})
    reply = served.client.post("/v2/models/digits/infer", DIGITS_BODY)
    assert reply.status == 503
    assert "MODEL_BUCKET is not set" in reply.json()["error"]


def test_an_unpinned_manifest_is_never_served(serve):
    served = serve("digits", {"MANIFEST_SHA256": ""})
    reply = served.client.post("/v2/models/digits/infer", DIGITS_BODY)
    assert reply.status == 503
    assert "MANIFEST_SHA256 is not set" in reply.json()["error"]
    assert served.get_calls == []


def test_large_files_arrive_as_parallel_ranged_gets(serve, monkeypatch):
    from handlers.runtime import model_store

    monkeypatch.setattr(model_store, "RANGE_PART_BYTES", 1000)  # the 4 KB digits model: five ranges
    served = serve("digits", private=True)
    ranges: list[str] = []
    client = served.store._client()
    client.meta.events.register(
        "before-parameter-build.s3.GetObject", lambda params, **_: ranges.append(params.get("Range"))
    )
    reply = served.client.post("/v2/models/digits/infer", DIGITS_BODY)
    assert reply.status == 200
    size = (artifact("digits") / "model.onnx").stat().st_size
    expected = [f"bytes={start}-{min(start + 1000, size) - 1}" for start in range(0, size, 1000)]
    assert sorted(r for r in ranges if r) == sorted(expected)
    assert ranges.count(None) == 1  # the manifest: one plain GET


def test_a_range_from_another_object_version_is_caught_by_the_sha256(serve, s3, monkeypatch):
    from handlers.runtime import model_store

    monkeypatch.setattr(model_store, "RANGE_PART_BYTES", 1000)
    served = serve("digits", private=True)
    key = served.environment["MODEL_PREFIX"] + "model.onnx"
    original = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    s3.put_object(Bucket=BUCKET, Key=key, Body=original[:-1] + bytes([original[-1] ^ 1]))  # one flipped bit
    failed = served.client.post("/v2/models/digits/infer", DIGITS_BODY)
    assert failed.status == 503 and "sha256" in failed.json()["error"]
    s3.put_object(Bucket=BUCKET, Key=key, Body=original)
    assert served.client.post("/v2/models/digits/infer", DIGITS_BODY).status == 200
