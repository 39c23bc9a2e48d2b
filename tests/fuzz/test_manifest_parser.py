"""The manifest parser under bad input: a Manifest, or ManifestError naming the field; never another
exception. (A bad manifest in S3 becomes a 503 at load; here the parser itself is held to account.)"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from contract.manifest import Manifest, ManifestError
from tests.fuzz.strategies import MANIFESTS, default_recursion_limit, dumps, json_values, nested, scalars

DOCUMENTS = {name: manifest.to_dict() for name, manifest in MANIFESTS.items()}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in a JSON document, the root excluded."""
    paths = []
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in children:
        paths.append((*prefix, key))
        paths.extend(_paths(child, (*prefix, key)))
    return paths


PATHS = {name: _paths(document) for name, document in DOCUMENTS.items()}
# Nested at most 300 deep: what parses must round-trip, and dataclasses.asdict (Manifest.to_json, used by
# the CLI) recurses twice per level into the free-form quantization and validation objects.
replacements = st.one_of(
    json_values,
    st.builds(nested, st.integers(min_value=1, max_value=300), scalars),
    st.sampled_from([-1, 0, 2**63, 10**30, "", "../x", "/etc/passwd", "A" * 64, "a" * 63, True, None, [], {}]),
)


def _parse(raw: bytes | str) -> Manifest | None:
    try:
        with default_recursion_limit():
            manifest = Manifest.loads(raw)
    except ManifestError as error:
        assert str(error).strip()
        return None
    assert Manifest.loads(manifest.to_json()) == manifest  # what parses, round-trips
    return manifest


@st.composite
def mutated_manifests(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(sorted(DOCUMENTS)))
    document = copy.deepcopy(DOCUMENTS[name])
    for path in draw(st.lists(st.sampled_from(PATHS[name]), min_size=1, max_size=3)):
        parent: Any = document
        try:
            for key in path[:-1]:
                parent = parent[key]
            if draw(st.integers(0, 4)) == 0 and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = draw(replacements)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed this path
    if draw(st.booleans()):
        document[draw(st.text(max_size=8))] = draw(json_values)
    return dumps(document)


@given(raw=mutated_manifests())
def test_mutated_manifests_parse_or_name_the_field(raw: bytes) -> None:
    _parse(raw)


@given(raw=st.one_of(st.binary(max_size=300), st.text(max_size=300), json_values.map(dumps)))
@example(raw=b"[" * 100_000 + b"]" * 100_000)  # RecursionError before the fix
@example(raw=b'{"schema_version": ' + b"1" * 5000 + b"}")  # ValueError (over 4,300 digits) before the fix
@example(raw='{"schema_version": 1, "version": "\ud800"}')
def test_raw_input_parses_or_is_a_manifest_error(raw: bytes | str) -> None:
    _parse(raw)


def test_the_demo_manifests_still_parse() -> None:
    for document in DOCUMENTS.values():
        assert _parse(json.dumps(document)) is not None
