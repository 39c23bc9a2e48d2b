from __future__ import annotations

import pytest

from handlers.runtime.settings import load_settings, vcpus_for_memory


@pytest.mark.parametrize(("memory", "vcpus"), [(128, 1), (1769, 1), (1770, 2), (3538, 2), (5307, 3), (10240, 6)])
def test_vcpus_follow_lambda_memory(memory, vcpus):
    assert vcpus_for_memory(memory) == vcpus


def test_threads_sized_to_memory_and_overridable():
    base = {"MODEL_NAME": "m", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "3538"}
    assert load_settings(base).intra_op_threads == 2
    assert load_settings({**base, "ORT_INTRA_OP_THREADS": "1"}).intra_op_threads == 1


def test_defaults_and_prefix():
    settings = load_settings({"MODEL_NAME": "m", "MODEL_PREFIX": "models/m/1"})
    assert settings.prefix == "models/m/1/"
    assert settings.manifest_key == "models/m/1/manifest.json"
    assert settings.load_mode == "lazy"
    assert settings.max_request_bytes == 6 * 1024 * 1024


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "MODEL_NAME is not set"),
        ({"MODEL_NAME": "m", "LOAD_MODE": "sometimes"}, "LOAD_MODE: expected one of lazy, eager"),
        ({"MODEL_NAME": "m", "MAX_REQUEST_BYTES": "lots"}, "MAX_REQUEST_BYTES: expected an integer"),
        ({"MODEL_NAME": "m", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "-5"}, "expected a positive integer"),
    ],
)
def test_wrong_settings_name_the_variable(env, message):
    with pytest.raises(ValueError, match=message):
        load_settings(env)
