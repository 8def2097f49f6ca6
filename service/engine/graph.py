"""The objective's backward graph as autograd sees it: grad_fn names, output first."""
from __future__ import annotations

import torch


def backward_graph(output: torch.Tensor, limit: int = 200) -> list[str]:
    """Breadth-first names of the autograd nodes from ``output`` back to the leaf."""
    names: list[str] = []
    seen: set[int] = set()
    frontier = [output.grad_fn] if output.grad_fn is not None else []
    while frontier and len(names) < limit:
        next_frontier = []
        for node in frontier:
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            names.append(type(node).__name__)
            next_frontier.extend(fn for fn, _ in node.next_functions)
        frontier = next_frontier
    return names
