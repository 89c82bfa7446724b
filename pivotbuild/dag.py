"""The stage graph (edges implied by deps and outs), target selection, and graph renderers.

An edge runs upstream → downstream when a dep of the downstream stage equals, lies inside, or
contains an out of the upstream stage, compared by whole path components (``data`` contains
``data/x`` but not ``database``). Outs are indexed in a path-component trie, so building the
graph costs time proportional to the total length of all paths plus the edges found, not
stages² comparisons.

Order: every list of stage names this module returns is topological, ties broken by
definition order in pivot.toml (matrix instances in expansion order), so output is stable
across runs and machines and reads like the file.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import networkx as nx

from pivotbuild import render_dag
from pivotbuild.config import Project, Stage
from pivotbuild.errors import ConfigError, UsageError, key_path
from pivotbuild.paths import PROJECT_FILE as _FILE
from pivotbuild.paths import PathProblem, normalize_path

__all__ = [
    "CycleError", "OverlapError", "SelfDependencyError", "build_graph", "select", "to_dot",
    "to_json", "to_mermaid", "to_text", "topological",
]


class OverlapError(ConfigError):
    """Two outs (of one stage or two) are the same path or one lies inside the other."""


class SelfDependencyError(ConfigError):
    """A stage depends on (a path overlapping) one of its own outs."""


class CycleError(ConfigError):
    """The implied edges form a cycle; ``cycle`` lists its stages, first one repeated last."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__(_FILE, "", "cycle in the pipeline: " + " -> ".join(cycle))


# ---------------------------------------------------------------------------------------------
# Out index: a trie over path components
# ---------------------------------------------------------------------------------------------

_Owner = tuple[str, int]  # (stage name, index into stage.outs)


class _Node:
    __slots__ = ("below", "children", "owner")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.owner: _Owner | None = None  # the out that is exactly this path
        # Every out strictly below this node, filled lazily for "dep contains out" queries.
        self.below: list[_Owner] | None = None


class OutIndex:
    """Every out of every stage, looked up by path, ancestor path or descendant path."""

    def __init__(self) -> None:
        self._root = _Node()

    def add(self, path: str, owner: _Owner) -> _Owner | None:
        """Insert an out; return an existing out it equals or overlaps (it is then not added)."""
        node = self._root
        parts = path.split("/")
        for part in parts:
            if node.owner is not None:
                return node.owner  # an existing out is an ancestor of this one
            node.below = None  # a new out below invalidates the memo
            node = node.children.setdefault(part, _Node())
        if node.owner is not None:
            return node.owner  # exactly the same path
        if node.children:
            return next(self._walk(node))  # an existing out lies inside this one
        node.owner = owner
        return None

    @staticmethod
    def _walk(node: _Node) -> Iterator[_Owner]:
        stack = [node]
        while stack:
            current = stack.pop()
            # Sorted so the reported out (first yielded) does not depend on insertion order.
            for name in sorted(current.children, reverse=True):
                child = current.children[name]
                if child.owner is not None:
                    yield child.owner
                stack.append(child)

    def _below(self, node: _Node) -> list[_Owner]:
        # Memoised: many deps on one big directory (``data``) would otherwise re-walk it.
        if node.below is None:
            node.below = list(self._walk(node))
        return node.below

    def overlapping(self, path: str) -> list[_Owner]:
        """Outs equal to ``path``, containing it, or inside it (``"."`` matches every out)."""
        found: list[_Owner] = []
        node = self._root
        if path != ".":
            for part in path.split("/"):
                if node.owner is not None:
                    found.append(node.owner)
                child = node.children.get(part)
                if child is None:
                    return found
                node = child
        if node.owner is not None:
            found.append(node.owner)
        found.extend(self._below(node))
        return found


# ---------------------------------------------------------------------------------------------
# Building the graph
# ---------------------------------------------------------------------------------------------


def _out_key(stage: Stage, index: int) -> str:
    return key_path("stages", stage.base, "outs", index)


def _named(stage: Stage) -> str:
    return f"stage {stage.name!r}"


def build_graph(project: Project) -> nx.DiGraph:
    """One node per stage (attr ``stage``, ``index``), one edge per implied dependency.

    Edge attr ``paths`` lists the (dep, out) pairs that imply it. ``graph.graph`` holds the out
    index and the matrix base → instances map that ``select`` uses. Raises OverlapError,
    SelfDependencyError or CycleError (all ConfigError, exit 2).
    """
    graph: nx.DiGraph = nx.DiGraph()
    index = OutIndex()
    bases: dict[str, list[str]] = {}
    stages = project.stages
    for position, (name, stage) in enumerate(stages.items()):
        graph.add_node(name, stage=stage, index=position)
        if stage.base != name:
            bases.setdefault(stage.base, []).append(name)
        for i, out in enumerate(stage.outs):
            clash = index.add(out.path, (name, i))
            if clash is None:
                continue
            other_name, j = clash
            other = stages[other_name].outs[j].path
            whose = "the same stage" if other_name == name else _named(stages[other_name])
            relation = ("is also an output of" if other == out.path else
                        f"overlaps output {other!r} of")
            raise OverlapError(_FILE, _out_key(stage, i),
                               f"output {out.path!r} of {_named(stage)} {relation} {whose}")

    for name, stage in stages.items():
        for i, dep in enumerate(stage.deps):
            for up, j in index.overlapping(dep):
                out_path = stages[up].outs[j].path
                if up == name:
                    raise SelfDependencyError(
                        _FILE, key_path("stages", stage.base, "deps", i),
                        f"{_named(stage)} depends on its own output {out_path!r} (dep {dep!r})")
                if graph.has_edge(up, name):
                    graph.edges[up, name]["paths"].append((dep, out_path))
                else:
                    graph.add_edge(up, name, paths=[(dep, out_path)])

    graph.graph["out_index"] = index
    graph.graph["bases"] = bases
    if not nx.is_directed_acyclic_graph(graph):
        raise CycleError(_find_cycle(graph))
    return graph


def _find_cycle(graph: nx.DiGraph) -> list[str]:
    # Start from the earliest-defined stage on any cycle so the message is stable.
    for component in sorted(
        (c for c in nx.strongly_connected_components(graph)
         if len(c) > 1 or any(graph.has_edge(n, n) for n in c)),
        key=lambda c: min(graph.nodes[n]["index"] for n in c),
    ):
        start = min(component, key=lambda n: graph.nodes[n]["index"])
        edges = nx.find_cycle(graph.subgraph(component), source=start)
        return [edges[0][0], *(v for _, v in edges)]
    return []  # unreachable: only called when the graph has a cycle


# ---------------------------------------------------------------------------------------------
# Selection
# ---------------------------------------------------------------------------------------------


def topological(graph: nx.DiGraph, names: Iterable[str] | None = None) -> list[str]:
    """``names`` (default: every stage) in topological order, ties by definition order."""
    order = nx.lexicographical_topological_sort(graph, key=lambda n: graph.nodes[n]["index"])
    if names is None:
        return list(order)
    wanted = set(names)
    return [n for n in order if n in wanted]


def _resolve(graph: nx.DiGraph, target: str) -> list[str]:
    """The stages one target names: a stage, a matrix base, or an output path."""
    if target in graph:
        return [target]
    bases: dict[str, list[str]] = graph.graph.get("bases", {})
    if target in bases:
        return list(bases[target])
    try:
        path = normalize_path(target)
    except PathProblem:
        path = ""
    index: OutIndex | None = graph.graph.get("out_index")
    if path and path != "." and index is not None:
        # A path equal to or inside an out selects its stage; a directory holding outs
        # selects every stage that writes into it (like `make build/` would).
        owners = dict.fromkeys(name for name, _ in index.overlapping(path))
        if owners:
            return list(owners)
    raise UsageError(f"unknown stage or output: {target!r}")


def stage_names(graph: nx.DiGraph, name: str) -> list[str]:
    """The stages a stage name or a matrix / foreach base name names; UsageError for any other
    (a path is no stage name)."""
    if name in graph:
        return [name]
    instances: list[str] = graph.graph.get("bases", {}).get(name, [])
    if not instances:
        raise UsageError(f"unknown stage: '{name}'")
    return list(instances)


def target_from_cwd(graph: nx.DiGraph, root: str, target: str) -> str:
    """A target as typed → what ``select`` takes: a stage or matrix base name as given, a path
    made project-relative (it is relative to the cwd); one outside the project as typed (that
    ``select`` then names as unknown)."""
    if target in graph or target in graph.graph.get("bases", {}):
        return target
    absolute = os.path.abspath(target)
    if absolute == root:
        return "."
    if absolute.startswith(root + "/"):
        return absolute[len(root) + 1:]
    return target


def select(graph: nx.DiGraph, targets: list[str], *, single_item: bool = False,
           downstream: bool = False) -> list[str]:
    """The stages a command acts on, in topological order (ties by definition order).

    No targets means every stage. Default: the targets and their upstream closure, except that a
    frozen stage is included but its upstream is not walked. ``single_item``: only the
    targets. ``downstream``: the targets and everything downstream of them.
    """
    if single_item and downstream:
        raise UsageError("--single-item and --downstream cannot be combined")
    if not targets:
        return topological(graph)
    chosen: dict[str, None] = {}
    for target in targets:
        chosen.update(dict.fromkeys(_resolve(graph, target)))
    if single_item:
        return topological(graph, chosen)
    selected = set(chosen)
    if downstream:
        for name in chosen:
            selected.update(nx.descendants(graph, name))
        return topological(graph, selected)
    queue = deque(chosen)
    while queue:
        name = queue.popleft()
        if graph.nodes[name]["stage"].frozen:
            continue  # a frozen stage never runs, so what feeds it does not matter
        for up in graph.predecessors(name):
            if up not in selected:
                selected.add(up)
                queue.append(up)
    return topological(graph, selected)


# ---------------------------------------------------------------------------------------------
# Renderers (render_dag.py, which fastpath.py shares)
# ---------------------------------------------------------------------------------------------


def _view(graph: nx.DiGraph, names: list[str] | None
          ) -> tuple[list[str], list[tuple[str, str]], set[str]]:
    chosen = topological(graph) if names is None else list(names)
    wanted = set(chosen)
    edges = [(u, v) for u in chosen for v in graph.successors(u) if v in wanted]
    frozen = {n for n in chosen if graph.nodes[n]["stage"].frozen}
    return chosen, render_dag.order_edges(chosen, edges), frozen


def to_json(graph: nx.DiGraph, names: list[str] | None = None) -> dict[str, list[Any]]:
    """``{"stages": [...], "edges": [[up, down], ...]}`` restricted to ``names``."""
    chosen, edges, _ = _view(graph, names)
    return render_dag.to_json(chosen, edges)


def to_dot(graph: nx.DiGraph, names: list[str] | None = None) -> str:
    """A Graphviz ``digraph``; frozen stages are drawn dashed."""
    return render_dag.to_dot(*_view(graph, names))


def to_mermaid(graph: nx.DiGraph, names: list[str] | None = None) -> str:
    """A Mermaid ``flowchart TD``; node ids are sanitised, labels are the real names."""
    chosen, edges, _ = _view(graph, names)
    return render_dag.to_mermaid(chosen, edges)


def to_text(graph: nx.DiGraph, names: list[str] | None = None) -> str:
    """One line per stage in the given order: ``name  <- up1, up2`` (upstream within names)."""
    return render_dag.to_text(*_view(graph, names))
