"""The README's benchmark figures are the last full run's: what ``benchmarks/render.py`` makes of
``benchmarks/results/latest.json``, never figures typed by hand."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmarks import render

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LATEST = ROOT / "benchmarks" / "results" / "latest.json"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_block_is_what_the_renderer_makes_of_latest_json() -> None:
    expected = render.block(render.load(LATEST))
    actual = render.current_block(README.read_text())
    assert actual == expected, (
        "README.md's benchmark block differs from benchmarks/results/latest.json: run `python -m benchmarks.render` "
        "(a full `make bench` does it), never edit the block by hand"
    )


def test_block_holds_the_run_s_cold_start_figures() -> None:
    """The rendered block carries the targets, the contenders' phases, what each change bought and the
    memory table of the run; a run without one of them renders without it, so check the run has them."""
    document = render.load(LATEST)
    metrics = {r.metric for r in document["records"]}
    assert {"cold start", "cold start, change by change", "target"} <= metrics
    text = render.block(document)
    for part in ("**Targets**", "**Cold start per contender**", "**What each change bought**", "**Memory size**"):
        assert part in text
    for record in document["records"]:
        if record.metric == "cold start, change by change":
            assert f"| {record.variant} | {render.tables.fmt(record.median)} |" in text


def test_the_cold_start_anchor_the_readme_links_to_exists() -> None:
    text = README.read_text()
    anchors = {_slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}
    links = set(re.findall(r"\]\(#([\w\-]+)\)", text))
    assert "cold-start-measured-as-lambda-runs-the-function" in anchors
    assert links <= anchors, f"links to missing headings: {sorted(links - anchors)}"


def test_replacing_the_block_touches_nothing_else(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{render.BEGIN}\nold figures\n{render.END}\nafter\n")
    results = tmp_path / "latest.json"
    results.write_text(LATEST.read_text())
    assert render.render(results, readme, check=True) is False
    assert "old figures" in readme.read_text()  # --check writes nothing
    assert render.render(results, readme) is False
    text = readme.read_text()
    assert text.startswith("before\n") and text.endswith("\nafter\n")
    assert render.current_block(text) == render.block(render.load(results))
    assert render.render(results, readme) is True  # a second run changes nothing


def test_a_changed_figure_is_caught(tmp_path: Path) -> None:
    document = json.loads(LATEST.read_text())
    record = next(r for r in document["records"] if r["metric"] == "cold start, change by change")
    record["median"] += 1000
    changed = tmp_path / "latest.json"
    changed.write_text(json.dumps(document))
    assert render.render(changed, README, check=True) is False


def test_markers_are_required(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("no block here\n")
    with pytest.raises(render.MarkersMissing):
        render.render(LATEST, readme)
