"""Batch records under bad input: a JSON Lines line, a CSV line and a queue document each become a
checked row or the project's 4xx error (which the batch handler writes to the errors file)."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from handlers.runtime import rows
from handlers.runtime.batch.text import csv_record
from tests.fuzz.strategies import (
    DIGITS,
    MANIFESTS,
    deep_values,
    dumps,
    expect_decode_or_4xx,
    infer_documents,
    json_values,
    scalars,
)

models = st.sampled_from(sorted(MANIFESTS))


def _check_row(result: Any, model: str) -> None:
    if isinstance(result, rows.Row):
        manifest = MANIFESTS[model]
        assert set(result.inputs) == {t.name for t in manifest.inputs}
        assert 1 <= result.batch <= manifest.limits.max_batch
        assert result.kind in ("oip", "v1", "row")


@st.composite
def json_lines(draw: st.DrawFn, model: str) -> bytes:
    """One line: an OIP request, a V1 request or instance, a bare input object, text, or anything."""
    manifest = MANIFESTS[model]
    spec = manifest.inputs[0]
    value = draw(
        st.one_of(
            infer_documents(manifest),
            st.fixed_dictionaries({"instances": st.lists(json_values, max_size=3)}),
            st.fixed_dictionaries({spec.name: st.one_of(json_values, deep_values)}),
            st.lists(scalars, min_size=60, max_size=66),
            deep_values,
            json_values,
        )
    )
    line = dumps(value)
    if model == "minilm" and draw(st.booleans()):
        line = draw(st.text(min_size=1, max_size=40)).encode("utf-8", "surrogatepass")  # plain text
    return line.replace(b"\n", b" ")


@given(model=models, data=st.data())
def test_json_lines_become_rows_or_a_clear_4xx(model: str, data: st.DataObject) -> None:
    line = data.draw(json_lines(model))
    _check_row(expect_decode_or_4xx(lambda: rows.row_from_line(7, line, MANIFESTS[model])), model)


@given(model=models, line=st.binary(min_size=1, max_size=300).filter(lambda b: b.strip() and b"\n" not in b))
@example(model="minilm", line=b"[" * 1000 + b'"a"' + b"]" * 1000)  # RecursionError before the fix
@example(model="minilm", line=b"\xed\xa0\x80")  # an encoded lone surrogate: not UTF-8
def test_raw_lines_become_rows_or_a_clear_4xx(model: str, line: bytes) -> None:
    _check_row(expect_decode_or_4xx(lambda: rows.row_from_line(1, line, MANIFESTS[model])), model)


csv_cells = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["", " ", "nan", "-inf", "1e999", "1_000", "0x10", "١", '"1"', "1,2", "\x00"]),
    st.text(max_size=10),
)


@given(cells=st.lists(csv_cells, max_size=70))
def test_csv_rows_become_rows_or_a_clear_4xx(cells: list[str]) -> None:
    _check_row(expect_decode_or_4xx(lambda: rows.row_from_csv(3, cells, DIGITS)), "digits")


@given(text=st.text(max_size=300))
@example(text="1,2\r3")  # csv.Error (a carriage return inside the line) crashed the whole file before the fix
@example(text="1" * 200_000)  # csv.Error: field larger than the field limit
def test_csv_lines_parse_or_are_a_clear_4xx(text: str) -> None:
    cells = expect_decode_or_4xx(lambda: csv_record(text))
    if isinstance(cells, list):
        _check_row(expect_decode_or_4xx(lambda: rows.row_from_csv(3, cells, DIGITS)), "digits")
