"""Walking an ONNX graph: the bodies of its If, Loop and Scan nodes, and who makes and reads each tensor."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import onnx


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs ``node`` holds as attributes (If's branches, Loop's and Scan's bodies)."""
    found: list[onnx.GraphProto] = []
    for attribute in node.attribute:
        found += [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)
    return found


def nested_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """The nodes inside ``graph``'s subgraphs, at any depth (not ``graph``'s own)."""
    for node in graph.node:
        for sub in subgraphs(node):
            yield from all_nodes(sub)


def all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """The nodes of ``graph`` and of its subgraphs, at any depth."""
    yield from graph.node
    yield from nested_nodes(graph)


class GraphIndex:
    """Lookups over a model's main graph: constants, each tensor's producer and readers, and the
    names read from outside the main graph's nodes (its outputs, and whatever a subgraph reads)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        self.constants = {t.name: t for t in graph.initializer}
        self.producers = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for name in node.input:
                self.consumers[name].append(node)
        self.outside = {o.name for o in graph.output} | {name for n in nested_nodes(graph) for name in n.input}
