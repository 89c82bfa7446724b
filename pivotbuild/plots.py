"""Plots: read plot outputs of one or more revisions and draw them on one offline HTML page.

The CLI reads each plot output's bytes per revision (the workspace from disk, another
revision through ``gitrev``) and calls:

- ``show({path: PlotSpec}, {rev label: {path: bytes | None}}) -> document`` (one revision
  for ``plots show``, several in order for ``plots diff``: they are overlaid on one chart);
- ``render_html(document) -> str``: one self-contained page, a chart per plot output.

Inputs: CSV (``.csv``), TSV (``.tsv``), and JSON or YAML records (``.json``, ``.yaml``,
``.yml``): a list of objects, or an object holding exactly one such list. CSV cells that read
as numbers are numbers; an empty cell is no value; a y value that is NaN or infinite is not
drawn (a gap), as an empty one.

The flag (``parse_plot_flag``): ``plot = true`` draws x = the ``step`` field if there is one,
else the first column, against every other numeric column; ``plot = {x, y, title,
template}`` names them (``y`` a field or a list of fields); templates are ``linear`` (lines,
the default), ``scatter`` (points) and ``bar`` (grouped bars).

Rendering: each chart is a Vega-Lite spec turned into SVG by ``vl-convert-python`` (the
``plots`` extra: ``pip install 'pivotbuild[plots]'``), in-process and offline, with every
external URL forbidden. The page holds only HTML, CSS and inline SVG: no script, no font or
stylesheet fetched, and a Content-Security-Policy that forbids loading anything, so it shows
the same offline, in a mail attachment or with JavaScript disabled, and weighs a few tens of
kilobytes per chart. Why not plotly or altair's HTML: they inline 1-4 MB of JavaScript per page
and need it to draw; altair would only build the same JSON spec written here by hand.

A file that cannot be read, a named field the data lacks, a non-numeric y value, and a plot
file missing from every revision are ``OperationError`` (exit 1) naming the file and revision;
a file missing from some revisions only is drawn from the others, with a note saying where it
was missing.
"""

from __future__ import annotations

import csv
import html
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pivotbuild.errors import ConfigError, OperationError
from pivotbuild.metrics import MetricsError, parse_document

__all__ = [
    "TEMPLATES",
    "PlotSpec",
    "load_records",
    "parse_plot_flag",
    "render_html",
    "show",
    "vegalite",
]

TEMPLATES = ("linear", "scatter", "bar")
_FLAG_KEYS = {"x", "y", "title", "template"}
_WIDTH, _HEIGHT = 640, 320


@dataclass(frozen=True, slots=True)
class PlotSpec:
    """What a ``plot`` out flag asks for; None fields are chosen from the data."""

    x: str | None = None
    y: tuple[str, ...] | None = None
    title: str | None = None
    template: str = "linear"


def parse_plot_flag(value: Any, where: str, file: str = "pivot.toml") -> PlotSpec | None:
    """The PlotSpec of an out's ``plot`` value (None for ``false``); ConfigError (exit 2)
    naming ``file`` and the key path ``where`` (``stages.train.outs[1].plot``) otherwise."""
    if value is False:
        return None
    if value is True:
        return PlotSpec()
    if not isinstance(value, dict):
        raise ConfigError(file, where, "expected true, false or a table {x, y, title, "
                          "template}")
    unknown = sorted(set(value) - _FLAG_KEYS)
    if unknown:
        raise ConfigError(file, f"{where}.{unknown[0]}", "unknown key (expected x, y, title "
                          "or template)")
    x, y, title = value.get("x"), value.get("y"), value.get("title")
    template = value.get("template", "linear")
    if x is not None and (not isinstance(x, str) or not x):
        raise ConfigError(file, f"{where}.x", "expected a field name")
    if isinstance(y, str):
        y = [y]
    if y is not None and (not isinstance(y, list) or not y
                          or not all(isinstance(f, str) and f for f in y)):
        raise ConfigError(file, f"{where}.y", "expected a field name or a list of field names")
    if title is not None and not isinstance(title, str):
        raise ConfigError(file, f"{where}.title", "expected a string")
    if template not in TEMPLATES:
        raise ConfigError(file, f"{where}.template", f"unknown template {template!r} "
                          f"(expected one of {', '.join(TEMPLATES)})")
    return PlotSpec(x=x, y=tuple(y) if y is not None else None, title=title, template=template)


# ---- reading the data -----------------------------------------------------------------------


def _where(path: str, rev: str | None) -> str:
    return f"{path} at {rev}" if rev else path


def _cell(text: str) -> Any:
    text = text.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return number  # "nan" and "inf" too: drawn as gaps, like an empty cell


def load_records(path: str, data: bytes, rev: str | None = None) -> list[dict[str, Any]]:
    """The rows of a plot file as a list of ``{column: value}``, columns in file order."""
    where = _where(path, rev)
    ext = os.path.splitext(path)[1].lower()
    if ext in (".csv", ".tsv"):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise OperationError(f"{where}: not UTF-8 text") from None
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if ext == ".tsv"
                            else ",")
        try:
            table = [row for row in reader if row]
        except csv.Error as exc:
            raise OperationError(f"{where}: not valid {ext[1:].upper()}: {exc}") from None
        if not table:
            raise OperationError(f"{where}: empty, expected a header row and data rows")
        header = [h.strip() for h in table[0]]
        if len(set(header)) != len(header) or not all(header):
            raise OperationError(f"{where}: the header row has an empty or repeated column")
        rows = []
        for number, row in enumerate(table[1:], start=2):
            if len(row) != len(header):
                raise OperationError(f"{where}: row {number} has {len(row)} cells, the header "
                                     f"has {len(header)}")
            rows.append({h: _cell(c) for h, c in zip(header, row)})
        return rows
    if ext not in (".json", ".yaml", ".yml"):
        raise OperationError(f"{where}: cannot plot a {ext or 'extension-less'} file "
                             f"(expected .csv, .tsv, .json, .yaml or .yml)")
    try:
        parsed = parse_document(path, data, rev)
    except MetricsError as exc:
        raise OperationError(str(exc)) from None
    if isinstance(parsed, dict):
        lists = [v for v in parsed.values() if isinstance(v, list)]
        parsed = lists[0] if len(lists) == 1 else None
    if not isinstance(parsed, list) or not all(isinstance(r, dict) for r in parsed):
        raise OperationError(f"{where}: expected a list of records (objects), or an object "
                             f"holding one such list")
    return [{str(k): v for k, v in r.items()} for r in parsed]


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for row in rows for k in row))


def _numeric(rows: Sequence[Mapping[str, Any]], column: str) -> bool:
    values = [r.get(column) for r in rows if r.get(column) is not None]
    return (any(_is_number(v) for v in values)
            and all(_is_number(v) or isinstance(v, float) for v in values))


def _axes(spec: PlotSpec, tables: Mapping[str, list[dict[str, Any]]], path: str
          ) -> tuple[str, list[str]]:
    """The x field and y fields for this plot, checked against every revision's rows."""
    first_rev, rows = next(iter(tables.items()))
    columns = _columns(rows)
    x = spec.x or ("step" if "step" in columns else (columns[0] if columns else None))
    if x is None:
        raise OperationError(f"{_where(path, first_rev)}: no data to plot")
    if spec.y is not None:
        ys = list(spec.y)
    else:
        ys = [c for c in columns if c != x and _numeric(rows, c)]
        if not ys:
            raise OperationError(f"{_where(path, first_rev)}: no numeric column to plot "
                                 f"against {x!r} (name one with plot = {{ y = ... }})")
    for rev, table in tables.items():
        present = set(_columns(table))
        for field in [x, *ys]:
            if field not in present:
                raise OperationError(f"{_where(path, rev)}: no field {field!r} to plot "
                                     f"(fields: {', '.join(sorted(present)) or 'none'})")
        for field in ys:
            for number, row in enumerate(table, start=1):
                value = row.get(field)
                if value is not None and not _is_number(value) and not isinstance(value, float):
                    raise OperationError(f"{_where(path, rev)}: record {number}: {field!r} is "
                                         f"not a number: {value!r}")
    return x, ys


def show(specs: Mapping[str, PlotSpec], revisions: Mapping[str, Mapping[str, bytes | None]]
         ) -> dict[str, Any]:
    """The plots document: ``{"plots": [{"path", "title", "template", "x", "y",
    "revisions", "missing", "data"}]}``, one entry per plot output in the order given.

    ``revisions`` maps a label (``"HEAD~1"``, ``"workspace"``) to that revision's files, in
    the order the legend shows them. ``data`` is long-form: ``{"rev", "field", "x", "value",
    "series"}`` per drawn point, ``series`` being what the colours tell apart."""
    plots = []
    for path, spec in specs.items():
        tables: dict[str, list[dict[str, Any]]] = {}
        missing = []
        for label, files in revisions.items():
            content = files.get(path)
            if content is None:
                missing.append(label)
            else:
                tables[label] = load_records(path, content, label)
        if not tables:
            where = ", ".join(missing) or "any revision"
            raise OperationError(f"{path}: plot file not found in {where} (has its stage run?)")
        x, ys = _axes(spec, tables, path)
        many_revs, many_fields = len(tables) > 1, len(ys) > 1
        data: list[dict[str, Any]] = []
        for label, rows in tables.items():
            for field in ys:
                series = (f"{label}: {field}" if many_revs and many_fields
                          else label if many_revs else field)
                data.extend({"rev": label, "field": field, "x": _finite_or_none(row.get(x)),
                             "value": row.get(field), "series": series}
                            for row in rows if _is_number(row.get(field)))
        plots.append({"path": path, "title": spec.title or path, "template": spec.template,
                      "x": x, "y": ys, "revisions": list(tables), "missing": missing,
                      "data": data})
    return {"plots": plots}


# ---- drawing --------------------------------------------------------------------------------


def vegalite(plot: Mapping[str, Any]) -> dict[str, Any]:
    """The Vega-Lite spec of one entry of a plots document."""
    data = plot["data"]
    numeric_x = all(_is_number(d["x"]) for d in data if d["x"] is not None)
    template = plot["template"]
    x_type = "quantitative" if numeric_x and template != "bar" else "ordinal"
    x: dict[str, Any] = {"field": "x", "type": x_type, "title": plot["x"]}
    if x_type == "ordinal":
        x["sort"] = None  # keep the file's order (epochs, names) rather than sort as text
    ys = plot["y"]
    encoding: dict[str, Any] = {
        "x": x,
        "y": {"field": "value", "type": "quantitative",
              "title": ys[0] if len(ys) == 1 else "value"},
    }
    series = list(dict.fromkeys(d["series"] for d in data))
    revs = list(dict.fromkeys(d["rev"] for d in data))
    legend: dict[str, Any] = {"orient": "bottom"}
    if template == "linear":
        legend["symbolType"] = "stroke"  # the legend shows line styles, dashes included
    if template != "bar" and len(revs) > 1 and len(ys) > 1:
        # A colour per field, a dash pattern (lines) or a shape (points) per revision.
        encoding["color"] = {"field": "field", "type": "nominal", "title": None,
                             "sort": ys, "legend": legend}
        second = "strokeDash" if template == "linear" else "shape"
        # Grey symbols: this legend tells revisions apart, not colours.
        rev_legend = {**legend, "symbolStrokeColor": "#444", "symbolFillColor": "#444",
                      "symbolStrokeWidth": 2}
        encoding[second] = {"field": "rev", "type": "nominal", "title": None, "sort": revs,
                            "legend": rev_legend}
    elif len(series) > 1:
        encoding["color"] = {"field": "series", "type": "nominal", "title": None,
                             "sort": series, "legend": legend}
        if template == "bar":
            encoding["xOffset"] = {"field": "series", "sort": series}
    if x_type == "ordinal":
        x["axis"] = {"labelAngle": 0}
    if template == "scatter":
        mark: dict[str, Any] = {"type": "point", "filled": True, "size": 60}
    elif template == "bar":
        mark = {"type": "bar"}
    else:
        mark = {"type": "line", "point": len(data) <= 60 * max(1, len(series))}
        encoding["detail"] = {"field": "series"}  # one line per series even without colour
    return {"width": _WIDTH, "height": _HEIGHT,
            "data": {"values": data}, "mark": mark, "encoding": encoding,
            "config": {"font": "sans-serif"}}


def _converter() -> Any:
    try:
        import vl_convert  # the `plots` extra
    except ImportError:
        raise OperationError("drawing plots needs the 'plots' extra: pip install "
                             "'pivotbuild[plots]' (it brings vl-convert-python)") from None
    return vl_convert


def render_svg(plot: Mapping[str, Any]) -> str:
    """One chart as an SVG document (no external reference: remote data is refused)."""
    converter = _converter()
    try:
        return str(converter.vegalite_to_svg(vegalite(plot), allowed_base_urls=[]))
    except ValueError as exc:
        reason = " ".join(str(exc).split())[:200]
        raise OperationError(f"{plot['path']}: the chart could not be drawn: {reason}") from None


_STYLE = """
body { font-family: sans-serif; margin: 2em auto; padding: 0 1em; max-width: 760px; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-bottom: .2em; }
section { margin-bottom: 2.5em; } figure { margin: 0; }
.note { color: #8a5a00; margin: .2em 0; } .meta { color: #666; margin: .2em 0; }
"""
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def render_html(doc: Mapping[str, Any], title: str = "pivotbuild plots") -> str:
    """The whole page: a heading, then per plot its path, notes and chart."""
    parts = [
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_CSP}\">\n",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n",
        f"<h1>{html.escape(title)}</h1>\n",
    ]
    if not doc["plots"]:
        parts.append("<p>No plot outputs.</p>\n")
    for plot in doc["plots"]:
        parts.append(f"<section>\n<h2>{html.escape(plot['title'])}</h2>\n")
        meta = [] if plot["title"] == plot["path"] else [plot["path"]]
        meta += [f"y: {', '.join(plot['y'])}", f"x: {plot['x']}",
                 (f"{'revisions' if len(plot['revisions']) > 1 else 'revision'}: "
                 f"{', '.join(plot['revisions'])}")]
        parts.append(f"<p class=\"meta\">{html.escape(' · '.join(meta))}</p>\n")
        if plot["missing"]:
            parts.append(f"<p class=\"note\">Not found in {html.escape(', '.join(plot['missing']))}"
                         f".</p>\n")
        parts.append(f"<figure>{_strip_prolog(render_svg(plot))}</figure>\n</section>\n")
    parts.append("</body>\n</html>\n")
    return "".join(parts)


def _strip_prolog(svg: str) -> str:
    """An SVG document made fit to sit inside HTML (no XML declaration)."""
    svg = svg.strip()
    if svg.startswith("<?xml"):
        svg = svg[svg.index("?>") + 2:].lstrip()
    return svg
