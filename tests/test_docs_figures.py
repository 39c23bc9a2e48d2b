"""The measured figures in README.md and docs/ are the last full run's: what ``benchmarks/render.py``
makes of ``benchmarks/results/latest.json``, in generated blocks, and no figure is typed outside
them; the pages' links lead somewhere."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from benchmarks import render

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LATEST = ROOT / "benchmarks" / "results" / "latest.json"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md")), *(ROOT / f for f in ("SECURITY.md", "layers/README.md"))]
PAGES += [ROOT / "benchmarks" / "README.md", ROOT / "model_artifacts" / "README.md"]
# A measured figure: a number with a time, ratio, throughput or decimal-megabyte unit (a × followed
# by a number is a dimension, 8 × 128). Thresholds ("≤ 0.6×", "at most 1 ms") are written with their
# comparison, so they are allowed.
FIGURE = re.compile(
    r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?:[–-]\d[\d,]*(?:\.\d+)?)?\s?(?:ms\b|×(?!\s?\d)|records/s|rows/s|req/s)"
)
DECIMAL_MB = re.compile(r"(?<![\w.])\d+\.\d+\s?MB\b")
THRESHOLD = re.compile(r"(?:≤|≥|<|>|at most|at least|under|over|up to)\s*$")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _outside_blocks(text: str) -> str:
    return re.sub(r"<!-- bench:([\w-]+):begin -->.*?<!-- bench:\1:end -->", "", text, flags=re.S)


def _prose(text: str) -> str:
    """The page without its generated blocks, fenced code and inline code."""
    text = re.sub(r"```.*?```", "", _outside_blocks(text), flags=re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def test_every_block_is_what_the_renderer_makes_of_latest_json() -> None:
    document = render.load(LATEST)
    for block in render.BLOCKS:
        actual = render.current_block((ROOT / block.path).read_text(), block.name)
        assert actual == render.make(block, document), (
            f"{block.path}'s {block.name} block differs from benchmarks/results/latest.json: run "
            "`python -m benchmarks.render` (a full `make bench` does it), never edit a block by hand"
        )


def test_every_block_has_figures_in_it() -> None:
    document = render.load(LATEST)
    for block in render.BLOCKS:
        body = "\n".join(block.body(document))
        assert re.search(r"\d", body) and "|" in body, f"{block.name}: the run gave it no table"


def test_cold_start_block_holds_the_run_s_cold_start_figures() -> None:
    """The targets, the contenders' phases, what each change bought and the memory table of the run;
    a run without one of them renders without it, so check the run has them."""
    document = render.load(LATEST)
    metrics = {r.metric for r in document["records"]}
    assert {"cold start", "cold start, change by change", "target"} <= metrics
    text = render.block(document)
    for part in ("**Targets**", "**Cold start per contender**", "**What each change bought**", "**Memory size**"):
        assert part in text
    for record in document["records"]:
        if record.metric == "cold start, change by change":
            assert f"| {record.variant} | {render.doc_blocks.tables.fmt(record.median)} |" in text


def test_the_readme_summary_names_every_missed_target() -> None:
    document = render.load(LATEST)
    summary = render.block(document, "summary")
    judged = [r for r in document["records"] if r.target]
    assert f"{sum(bool(r.passed) for r in judged)} of {len(judged)} met" in summary
    for record in judged:
        if not record.passed:
            assert str(record.target) in summary


def test_no_figure_is_typed_outside_a_block() -> None:
    typed = []
    for page in PAGES:
        prose = _prose(page.read_text())
        for pattern in (FIGURE, DECIMAL_MB):
            for match in pattern.finditer(prose):
                if not THRESHOLD.search(prose[max(0, match.start() - 12) : match.start()]):
                    line = prose.count("\n", 0, match.start()) + 1
                    typed.append(f"{page.relative_to(ROOT)}: {match.group()!r} (prose line {line})")
    assert not typed, "measured figures belong in generated blocks:\n" + "\n".join(typed)


def test_the_figure_scan_catches_a_typed_figure() -> None:
    """The negative control of the scan above."""
    page = "Cold start is 270 ms, 0.74× the tutorial at 8 × 128 tokens; the layer is 107.3 MB.\n"
    assert [m.group() for m in FIGURE.finditer(page)] == ["270 ms", "0.74×"]
    assert [m.group() for m in DECIMAL_MB.finditer(page)] == ["107.3 MB"]
    assert not FIGURE.search(_prose("<!-- bench:x:begin -->\n270 ms\n<!-- bench:x:end -->\n"))


def test_links_between_pages_lead_somewhere() -> None:
    broken = []
    for page in PAGES:
        text = page.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)} → {target}: no such file")
            elif anchor and file.suffix == ".md":
                headings = {_slug(line.lstrip("#")) for line in file.read_text().splitlines() if line.startswith("#")}
                if anchor not in headings:
                    broken.append(f"{page.relative_to(ROOT)} → {target}: no such heading")
    assert not broken, "\n".join(broken)


def test_the_readme_is_a_product_page() -> None:
    assert len(README.read_text().splitlines()) <= 250


def _copy_pages(root: Path) -> None:
    for page in PAGES:
        (root / page.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(page, root / page.relative_to(ROOT))


def test_rendering_touches_nothing_outside_the_blocks(tmp_path: Path) -> None:
    _copy_pages(tmp_path)
    block = next(b for b in render.BLOCKS if b.name == "cold-start")
    page = tmp_path / block.path
    begin, end = render.markers(block.name)
    text = page.read_text()
    stale = render.replace_block(text, f"{begin}\nold figures\n{end}", block.name)
    page.write_text(stale)
    assert render.render(LATEST, tmp_path, check=True) == [block.path]
    assert "old figures" in page.read_text()  # --check writes nothing
    assert render.render(LATEST, tmp_path) == [block.path]
    assert page.read_text() == text
    assert render.render(LATEST, tmp_path) == []  # a second run changes nothing


def test_a_changed_figure_is_caught(tmp_path: Path) -> None:
    document = json.loads(LATEST.read_text())
    record = next(r for r in document["records"] if r["metric"] == "cold start, change by change")
    record["median"] += 1000
    changed = tmp_path / "latest.json"
    changed.write_text(json.dumps(document))
    assert render.render(changed, ROOT, check=True) == [Path("docs/benchmarks.md")]


def test_markers_are_required(tmp_path: Path) -> None:
    _copy_pages(tmp_path)
    (tmp_path / "docs" / "events.md").write_text("no block here\n")
    with pytest.raises(render.MarkersMissing):
        render.render(LATEST, tmp_path)
