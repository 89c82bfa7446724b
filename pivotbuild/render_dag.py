"""The stage graph as text, Graphviz dot, Mermaid or JSON, from plain names and edges.

Free of networkx, so that ``dag`` can print from the pipeline snapshot
(fastpath.py) as well as from the graph (dag.py). ``names`` are in the order
to print (topological); ``edges`` are (upstream, downstream) pairs with both
ends in ``names``, in the order of their ends' positions; ``frozen`` holds the
frozen stages.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing costs the fast path start-up time

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

Edge = tuple[str, str]


def order_edges(names: Sequence[str], edges: Collection[Edge]) -> list[Edge]:
    """The edges with both ends in ``names``, ordered by (upstream, downstream) position."""
    position = {name: i for i, name in enumerate(names)}
    kept = [(u, v) for u, v in edges if u in position and v in position]
    kept.sort(key=lambda e: (position[e[0]], position[e[1]]))
    return kept


def to_json(names: Sequence[str], edges: Sequence[Edge]) -> dict[str, list[object]]:
    """``{"stages": [...], "edges": [[up, down], ...]}``."""
    return {"stages": list(names), "edges": [[u, v] for u, v in edges]}


def _dot_quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(names: Sequence[str], edges: Sequence[Edge], frozen: Collection[str]) -> str:
    """A Graphviz ``digraph``; frozen stages are drawn dashed."""
    lines = ["digraph pivotbuild {", "  rankdir=TB;"]
    for name in names:
        style = " [style=dashed]" if name in frozen else ""
        lines.append(f"  {_dot_quote(name)}{style};")
    for u, v in edges:
        lines.append(f"  {_dot_quote(u)} -> {_dot_quote(v)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mermaid_ids(names: Sequence[str]) -> dict[str, str]:
    # Mermaid ids may not contain '@', '.', '-' and choke on keywords like `end`: prefix every
    # id and replace other characters, numbering the rare names that collide afterwards.
    import re

    ids: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        base = "s_" + re.sub(r"[^A-Za-z0-9_]", "_", name)
        candidate, n = base, 1
        while candidate in used:
            n += 1
            candidate = f"{base}_{n}"
        used.add(candidate)
        ids[name] = candidate
    return ids


def to_mermaid(names: Sequence[str], edges: Sequence[Edge]) -> str:
    """A Mermaid ``flowchart TD``; node ids are sanitised, labels are the real names."""
    ids = _mermaid_ids(names)
    lines = ["flowchart TD"]
    for name in names:
        label = name.replace('"', "#quot;")
        lines.append(f'  {ids[name]}["{label}"]')
    for u, v in edges:
        lines.append(f"  {ids[u]} --> {ids[v]}")
    return "\n".join(lines) + "\n"


def to_text(names: Sequence[str], edges: Sequence[Edge], frozen: Collection[str]) -> str:
    """One line per stage in the given order: ``name  <- up1, up2`` (upstream within names)."""
    if not names:
        return "(no stages)\n"
    ups: dict[str, list[str]] = {name: [] for name in names}
    for u, v in edges:
        ups[v].append(u)
    width = max(len(name) for name in names)
    lines = []
    for name in names:
        line = name.ljust(width)
        if ups[name]:
            line += "  <- " + ", ".join(ups[name])
        if name in frozen:
            line += "  (frozen)"
        lines.append(line.rstrip())
    return "\n".join(lines) + "\n"


def render(fmt: str | None, names: Sequence[str], edges: Collection[Edge],
           frozen: Collection[str]) -> str:
    """The whole ``dag`` output in one format (None: text), ending in a newline."""
    ordered = order_edges(names, edges)
    if fmt == "json":
        import json

        return json.dumps(to_json(names, ordered), indent=2) + "\n"
    if fmt == "dot":
        return to_dot(names, ordered, frozen)
    if fmt == "mermaid":
        return to_mermaid(names, ordered)
    return to_text(names, ordered, frozen)
