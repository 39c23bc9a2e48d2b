"""Every measured figure in README.md and docs/, written from ``benchmarks/results/latest.json``.

Each figure sits in a generated block between ``<!-- bench:NAME:begin -->`` and
``<!-- bench:NAME:end -->``; ``BLOCKS`` says which file holds which block and which function of
``benchmarks.doc_blocks`` makes it. The suite rewrites them at the end of a full run;
``tests/test_docs_figures.py`` fails when a block differs from what this module makes of
``latest.json``, or when a figure appears outside a block::

    python -m benchmarks.render           # rewrite every block from benchmarks/results/latest.json
    python -m benchmarks.render --check   # exit 1 when a block differs (nothing written)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import doc_blocks
from benchmarks.records import Record
from benchmarks.timing import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"
LATEST = ROOT / "benchmarks" / "results" / "latest.json"
NOTICE = "<!-- written by `python -m benchmarks.render` from benchmarks/results/latest.json: do not edit by hand -->"


@dataclass(frozen=True)
class Block:
    name: str
    path: Path  # relative to the project's root
    body: Callable[[dict[str, Any]], list[str]]


BLOCKS = (
    Block("summary", Path("README.md"), doc_blocks.summary),
    Block("cold-start", Path("docs/benchmarks.md"), doc_blocks.cold_start),
    Block("warm-latency", Path("docs/api.md"), doc_blocks.warm_latency),
    Block("serve", Path("docs/local.md"), doc_blocks.serve),
    Block("recipe-summary", Path("README.md"), doc_blocks.recipe_summary),
    Block("recipes", Path("docs/add.md"), doc_blocks.recipes),
    Block("quantization", Path("docs/add.md"), doc_blocks.quantization),
    Block("pruning", Path("docs/add.md"), doc_blocks.pruning),
    Block("queue", Path("docs/events.md"), doc_blocks.queue),
    Block("package", Path("layers/README.md"), doc_blocks.package),
    Block("scale", Path("docs/configuration.md"), doc_blocks.scale),
    Block("big-batch", Path("docs/events.md"), doc_blocks.big_batch),
)


def markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"


BEGIN, END = markers("cold-start")


class MarkersMissing(ValueError):
    """The README has no generated block (or a broken one) to replace."""


def load(path: Path = LATEST) -> dict[str, Any]:
    """``latest.json`` with its records as :class:`Record` objects."""
    document: dict[str, Any] = json.loads(path.read_text())
    document["records"] = [Record.from_dict(r) for r in document["records"]]
    return document


def make(block: Block, document: dict[str, Any]) -> str:
    """The block's text, markers included."""
    begin, end = markers(block.name)
    return "\n".join([begin, NOTICE, "", *block.body(document), end])


def block(document: dict[str, Any], name: str = "cold-start") -> str:
    """The named block made from ``document``."""
    return make(next(b for b in BLOCKS if b.name == name), document)


def _span(text: str, name: str) -> tuple[int, int]:
    begin, end = markers(name)
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start or text.count(begin) != 1 or text.count(end) != 1:
        raise MarkersMissing(f"expected one {begin} … {end} block")
    return start, stop + len(end)


def replace_block(text: str, new_block: str, name: str = "cold-start") -> str:
    """``text`` with its block ``name`` replaced by ``new_block``."""
    start, stop = _span(text, name)
    return text[:start] + new_block + text[stop:]


def current_block(text: str, name: str = "cold-start") -> str:
    """The block ``name`` as it stands in ``text`` (markers included)."""
    start, stop = _span(text, name)
    return text[start:stop]


def render(results: Path = LATEST, root: Path = ROOT, check: bool = False) -> list[Path]:
    """Write (or with ``check``, only compare) every block under ``root``; return the files that differed."""
    document = load(results)
    differed = []
    for path in sorted({b.path for b in BLOCKS}):
        text = (root / path).read_text()
        updated = text
        for b in (b for b in BLOCKS if b.path == path):
            updated = replace_block(updated, make(b, document), b.name)
        if updated != text:
            differed.append(path)
            if not check:
                (root / path).write_text(updated)
    return differed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.render", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=LATEST, help="the run's latest.json")
    parser.add_argument("--root", type=Path, default=ROOT, help="the folder holding README.md and docs/")
    parser.add_argument("--check", action="store_true", help="only compare: exit 1 when a block differs")
    args = parser.parse_args(argv)
    differed = render(args.results, args.root, check=args.check)
    names = ", ".join(str(p) for p in differed) or "nothing"
    if args.check:
        print(
            f"blocks from {args.results}: "
            + (f"{names} DIFFER (run python -m benchmarks.render)" if differed else "up to date")
        )
        return 1 if differed else 0
    print(f"blocks from {args.results}: {names} rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
