"""pivot.toml's JSON Schema for editors, generated from the models that validate it.

The schema comes from the pydantic models of config_schema.RawFile, with what pydantic
cannot see from the types added: the short spellings its validators accept before building a
model (``cmd`` as a string, an out as a plain path, ``metric`` / ``plot`` as lists or
tables), and no ``null`` (TOML has none). ``pivotbuild schema`` prints it.
"""

from __future__ import annotations

from typing import Any

SCHEMA_URL = "https://json-schema.org/draft/2020-12/schema"

_STRINGS = {"type": "array", "items": {"type": "string"}}
_PLOT_TABLE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "x": {"type": "string"},
        "y": {"anyOf": [{"type": "string"}, _STRINGS]},
        "title": {"type": "string"},
        "template": {"type": "string"},
    },
}
# Fields whose validators accept more than their model type says (SPEC §1, §11).
_ACCEPTS = {
    ("RawStage", "cmd"): {"anyOf": [{"type": "string"}, _STRINGS],
                          "description": "A shell command, or a list run in order."},
    ("RawOut", "metric"): {"anyOf": [{"type": "boolean"}, _STRINGS],
                           "description": "true, or the metrics files inside a directory "
                                          "output."},
    ("RawOut", "plot"): {"anyOf": [{"type": "boolean"}, _STRINGS, _PLOT_TABLE],
                         "description": "true, the plot files inside a directory output, or "
                                        "{ x, y, title, template }."},
}


def _without_null(node: Any) -> Any:
    """The schema without ``null`` branches and ``null`` defaults (TOML has no null)."""
    if isinstance(node, list):
        return [_without_null(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _without_null(v) for k, v in node.items()
           if not (k == "default" and v is None)}
    branches = out.get("anyOf")
    if isinstance(branches, list):
        kept = [b for b in branches if b != {"type": "null"}]
        if len(kept) == 1:
            del out["anyOf"]
            out = {**kept[0], **out}
        else:
            out["anyOf"] = kept
    return out


def pivot_schema() -> dict[str, Any]:
    """The JSON Schema of pivot.toml."""
    from pivotbuild.config_schema import RawFile

    schema = _without_null(RawFile.model_json_schema(mode="validation"))
    defs = schema.get("$defs", {})
    for (model, field), accepted in _ACCEPTS.items():
        props = defs.get(model, {}).get("properties", {})
        if field in props:
            title = props[field].get("title")
            props[field] = {**({"title": title} if title else {}), **accepted}
    stage = defs.get("RawStage", {}).get("properties", {})
    outs = stage.get("outs")
    if isinstance(outs, dict) and isinstance(outs.get("items"), dict):
        outs["items"] = {"anyOf": [{"type": "string"}, outs["items"]]}
    return {"$schema": SCHEMA_URL, "title": "pivot.toml",
            "description": "A pivotbuild pipeline (SPEC: pivot.toml).", **schema}


__all__ = ["SCHEMA_URL", "pivot_schema"]
