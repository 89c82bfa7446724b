"""plots: reading plot files, the plots document, Vega-Lite specs and the offline HTML page,
which a real headless Chromium opens (marked slow)."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from pivotbuild import plots
from pivotbuild.errors import EXIT_FAILED, EXIT_USAGE, ConfigError, OperationError
from pivotbuild.plots import PlotSpec

LOSS_OLD = b"step,loss,acc\n0,1.0,0.5\n1,0.6,0.7\n2,0.4,0.8\n"
LOSS_NEW = b"step,loss,acc\n0,0.9,0.55\n1,0.5,0.75\n2,0.3,0.85\n"


# ---- the flag -------------------------------------------------------------------------------


def test_plot_flag_forms() -> None:
    assert plots.parse_plot_flag(True, "w") == PlotSpec()
    assert plots.parse_plot_flag(False, "w") is None
    assert plots.parse_plot_flag({"x": "epoch", "y": "loss"}, "w") == PlotSpec("epoch",
                                                                                ("loss",))
    assert plots.parse_plot_flag({"y": ["a", "b"], "title": "T", "template": "scatter"},
                                 "w") == PlotSpec(None, ("a", "b"), "T", "scatter")


@pytest.mark.parametrize(("value", "message"), [
    ("yes", ("pivot.toml: stages.t.outs[0].plot: expected true, false or a table {x, y, "
     "title, template}")),
    ({"z": 1}, ("pivot.toml: stages.t.outs[0].plot.z: unknown key (expected x, y, title or "
     "template)")),
    ({"template": "pie"}, ("pivot.toml: stages.t.outs[0].plot.template: unknown template 'pie' "
     "(expected one of linear, scatter, bar)")),
    ({"y": []}, ("pivot.toml: stages.t.outs[0].plot.y: expected a field name or a list of "
     "field names")),
    ({"x": 3}, "pivot.toml: stages.t.outs[0].plot.x: expected a field name"),
    ({"title": 3}, "pivot.toml: stages.t.outs[0].plot.title: expected a string"),
])
def test_a_bad_plot_flag_is_a_config_error_naming_the_key(value: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        plots.parse_plot_flag(value, "stages.t.outs[0].plot")
    assert str(info.value) == message and info.value.exit_code == EXIT_USAGE


# ---- reading --------------------------------------------------------------------------------


def test_csv_tsv_json_and_yaml_records() -> None:
    expected = [{"step": 0, "loss": 1.0, "name": "a"}, {"step": 1, "loss": 0.5, "name": None}]
    assert plots.load_records("p.csv", b"step,loss,name\n0,1.0,a\n1,0.5,\n") == expected
    assert plots.load_records("p.tsv", b"step\tloss\tname\r\n0\t1.0\ta\r\n1\t0.5\t\r\n") == expected
    records = b'[{"step": 0, "loss": 1.0, "name": "a"}, {"step": 1, "loss": 0.5, "name": null}]'
    assert plots.load_records("p.json", records) == expected
    assert plots.load_records("p.json", b'{"train": ' + records + b"}") == expected
    assert plots.load_records("p.yaml", b"- {step: 0, loss: 1.0, name: a}\n"
                                        b"- {step: 1, loss: 0.5, name: null}\n") == expected


@pytest.mark.parametrize(("name", "data", "message"), [
    ("p.csv", b"a,b\n1,2\n3\n", "p.csv at HEAD: row 3 has 1 cells, the header has 2"),
    ("p.csv", b"a,a\n1,2\n", "p.csv at HEAD: the header row has an empty or repeated column"),
    ("p.csv", b"", "p.csv at HEAD: empty, expected a header row and data rows"),
    ("p.csv", b"\xff", "p.csv at HEAD: not UTF-8 text"),
    ("p.json", b'{"a": [], "b": []}', ("p.json at HEAD: expected a list of records (objects), "
     "or an object holding one such list")),
    ("p.json", b"[1, 2]", ("p.json at HEAD: expected a list of records (objects), or an "
     "object holding one such list")),
    ("p.json", b"[", "p.json at HEAD: not valid JSON: Expecting value at line 1 column 2"),
    ("p.parquet", b"PAR1", ("p.parquet at HEAD: cannot plot a .parquet file (expected .csv, "
     ".tsv, .json, .yaml or .yml)")),
])
def test_an_unreadable_plot_file_names_the_file_and_revision(name: str, data: bytes,
                                                             message: str) -> None:
    with pytest.raises(OperationError) as info:
        plots.load_records(name, data, "HEAD")
    assert str(info.value) == message and info.value.exit_code == EXIT_FAILED


# ---- the document ---------------------------------------------------------------------------


def test_default_axes_step_first_then_first_column_and_numeric_columns_only() -> None:
    doc = plots.show({"a.csv": PlotSpec(), "b.csv": PlotSpec()},
                     {"workspace": {"a.csv": b"epoch,step,loss,tag\n1,0,0.5,x\n",
                                    "b.csv": b"epoch,loss,acc,tag\n1,0.5,0.7,x\n"}})
    a, b = doc["plots"]
    assert (a["x"], a["y"]) == ("step", ["epoch", "loss"])
    assert (b["x"], b["y"]) == ("epoch", ["loss", "acc"])
    assert b["data"] == [
        {"rev": "workspace", "field": "loss", "x": 1, "value": 0.5, "series": "loss"},
        {"rev": "workspace", "field": "acc", "x": 1, "value": 0.7, "series": "acc"}]


def test_revisions_are_overlaid_and_a_file_missing_from_one_is_noted() -> None:
    spec = {"loss.csv": PlotSpec(y=("loss",)), "new.csv": PlotSpec()}
    doc = plots.show(spec, {"HEAD~1": {"loss.csv": LOSS_OLD, "new.csv": None},
                            "workspace": {"loss.csv": LOSS_NEW, "new.csv": b"s,v\n0,1\n"}})
    loss, new = doc["plots"]
    assert loss["revisions"] == ["HEAD~1", "workspace"] and loss["missing"] == []
    assert [(d["series"], d["x"], d["value"]) for d in loss["data"]] == [
        ("HEAD~1", 0, 1.0), ("HEAD~1", 1, 0.6), ("HEAD~1", 2, 0.4),
        ("workspace", 0, 0.9), ("workspace", 1, 0.5), ("workspace", 2, 0.3)]
    assert new["revisions"] == ["workspace"] and new["missing"] == ["HEAD~1"]
    both = plots.show({"loss.csv": PlotSpec()}, {"v1": {"loss.csv": LOSS_OLD},
                                                 "v2": {"loss.csv": LOSS_NEW}})["plots"][0]
    assert {d["series"] for d in both["data"]} == {"v1: loss", "v1: acc", "v2: loss",
                                                   "v2: acc"}


@pytest.mark.parametrize(("spec", "files", "message"), [
    (PlotSpec(x="epoch"), {"HEAD": LOSS_OLD},
     "loss.csv at HEAD: no field 'epoch' to plot (fields: acc, loss, step)"),
    (PlotSpec(y=("acc", "f1")), {"HEAD": LOSS_OLD, "workspace": b"step,acc,f1\n0,1,2\n"},
     "loss.csv at HEAD: no field 'f1' to plot (fields: acc, loss, step)"),
    (PlotSpec(y=("tag",)), {"workspace": b"step,tag\n0,1\n1,x\n"},
     "loss.csv at workspace: record 2: 'tag' is not a number: 'x'"),
    (PlotSpec(), {"workspace": b"step,tag\n0,x\n"},
     ("loss.csv at workspace: no numeric column to plot against 'step' (name one with plot = "
     "{ y = ... })")),
    (PlotSpec(), {"HEAD": None, "workspace": None},
     "loss.csv: plot file not found in HEAD, workspace (has its stage run?)"),
])
def test_plot_problems_name_the_file_and_revision(spec: PlotSpec, files: dict[str, bytes | None],
                                                  message: str) -> None:
    with pytest.raises(OperationError) as info:
        plots.show({"loss.csv": spec}, {rev: {"loss.csv": data} for rev, data in files.items()})
    assert str(info.value) == message


def test_vegalite_specs_per_template() -> None:
    revs = {"HEAD": {"p.csv": LOSS_OLD}, "workspace": {"p.csv": LOSS_NEW}}
    for template, mark in [("linear", "line"), ("scatter", "point"), ("bar", "bar")]:
        doc = plots.show({"p.csv": PlotSpec(y=("loss", "acc"), template=template)}, revs)
        spec = plots.vegalite(doc["plots"][0])
        assert spec["mark"]["type"] == mark
        assert len(spec["data"]["values"]) == 12
    line = plots.vegalite(plots.show({"p.csv": PlotSpec()}, revs)["plots"][0])
    assert line["encoding"]["color"]["field"] == "field"  # a colour per field ...
    assert line["encoding"]["strokeDash"]["field"] == "rev"  # ... a dash per revision
    bar = plots.vegalite(plots.show({"p.csv": PlotSpec(y=("acc",), template="bar")},
                                    revs)["plots"][0])
    assert bar["encoding"]["xOffset"]["field"] == "series"
    assert bar["encoding"]["x"]["type"] == "ordinal"


def test_the_page_is_self_contained_html_with_one_svg_per_chart() -> None:
    doc = plots.show({"loss.csv": PlotSpec(title="Loss <&> acc"), "f1.json": PlotSpec()},
                     {"workspace": {"loss.csv": LOSS_NEW,
                                    "f1.json": b'[{"epoch": "a", "f1": 0.5}]'}})
    page = plots.render_html(doc, "plots show")
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 2 and page.count("</svg>") == 2
    assert "<h2>Loss &lt;&amp;&gt; acc</h2>" in page
    assert "<script" not in page.lower()
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    # Nothing is loaded from anywhere: the only URLs are the SVG and XLink namespaces.
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", page))
    assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}
    assert not re.search(r"\b(src|href)\s*=", page)
    empty = plots.render_html({"plots": []})
    assert "No plot outputs." in empty


def test_without_the_plots_extra_drawing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setitem(sys.modules, "vl_convert", None)  # import fails as if not installed
    doc = plots.show({"p.csv": PlotSpec()}, {"workspace": {"p.csv": LOSS_NEW}})
    with pytest.raises(OperationError, match=r"^drawing plots needs the 'plots' extra: pip "
                                             r"install 'pivotbuild\[plots\]'"):
        plots.render_html(doc)


# ---- in a real browser ----------------------------------------------------------------------

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--enable-logging=stderr", "--v=0",
                  "--host-resolver-rules=MAP * ~NOTFOUND"]  # any network fetch would fail
VEGA_BLUE = (0x4C, 0x78, 0xA8)  # the first colour of Vega's default palette
VEGA_ORANGE = (0xF5, 0x85, 0x18)  # the second


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("chromium is not installed: the plots page is checked in a real browser "
                "(Debian: apt-get install -y chromium)")


def _browse(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args,
                           page.as_uri()], capture_output=True, text=True, timeout=180,
                          check=False)


def _console(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines()
            if ":CONSOLE" in line or "Uncaught" in line]


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the unfiltered rows of an 8-bit RGB or RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows, previous = [], bytes(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) *
                                                          (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                upleft = previous[i - channels] if i >= channels else 0
                p = left + up - upleft
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - upleft)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else upleft
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line if channels == 3 else bytes(
            b for j, b in enumerate(line) if j % 4 != 3)))
        previous = bytes(line)
    return width, height, rows


def _count(rows: list[bytes], rgb: tuple[int, int, int]) -> int:
    needle = bytes(rgb)
    return sum(sum(1 for i in range(0, len(r), 3) if r[i:i + 3] == needle) for r in rows)


PLOT_PROJECT = """
[stages.make]
cmd = "cp src/f1.json eval/f1.json && cp src/loss.csv train/loss.csv && cp src/p.tsv points.tsv"
deps = ["src"]
outs = [
  { path = "eval/f1.json", plot = { x = "epoch", y = "f1", template = "bar", title = "F1" } },
  { path = "train/loss.csv", plot = true },
  { path = "points.tsv", plot = { template = "scatter" } },
]
"""


def _plots_diff_page(root: Path) -> Path:
    """A project with three plot outputs, committed, then changed in the workspace, and the
    page ``pivotbuild plots diff`` (HEAD against the workspace) writes for it."""
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}

    def command(*args: str) -> None:
        done = subprocess.run(args, cwd=root, env={**os.environ, **env}, capture_output=True,
                              text=True, check=False, timeout=300)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr

    (root / "src").mkdir(parents=True)
    (root / "pivot.toml").write_text(PLOT_PROJECT)
    (root / ".gitignore").write_text("/eval/\n/train/\n/points.tsv\n")
    versions = [
        (b'[{"epoch": "a", "f1": 0.5}, {"epoch": "b", "f1": 0.7}]', LOSS_OLD,
         b"a\tb\n1\t2\n2\t3\n"),
        (b'{"rows": [{"epoch": "a", "f1": 0.6}, {"epoch": "b", "f1": 0.8}]}', LOSS_NEW,
         b"a\tb\n1\t2.5\n2\t3.5\n3\t1\n"),
    ]
    command("git", "init", "-q")
    for number, (f1, loss, points) in enumerate(versions):
        (root / "src" / "f1.json").write_bytes(f1)
        (root / "src" / "loss.csv").write_bytes(loss)
        (root / "src" / "p.tsv").write_bytes(points)
        command(sys.executable, "-m", "pivotbuild", "repro")
        if number == 0:
            command("git", "add", ".")
            command("git", "commit", "-q", "-m", "first")
    command(sys.executable, "-m", "pivotbuild", "plots", "diff", "-o", "page.html")
    return root / "page.html"


@pytest.mark.slow
def test_the_page_renders_in_headless_chromium_without_console_errors(tmp_path: Path) -> None:
    # First, that this check can see a console error at all.
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><script>missing_function();</script></body></html>")
    seen = _browse(broken, tmp_path / "profile0", "--dump-dom")
    assert any("Uncaught" in line for line in _console(seen.stderr)), seen.stderr[-2000:]

    # The page `plots diff` writes for a project in git whose plot outputs (cached, so read
    # through HEAD's lock and the cache) changed since: bars, lines and points.
    page = _plots_diff_page(tmp_path / "proj")
    html_text = page.read_text(encoding="utf-8")
    assert html_text.count("revisions: HEAD, workspace") == 3
    dom = _browse(page, tmp_path / "profile1", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _console(dom.stderr) == []
    assert dom.stdout.count("<svg") == 3
    for mark in ("mark-rect", "mark-line", "mark-symbol"):  # bars, lines, points drawn
        assert mark in dom.stdout, mark

    shot = tmp_path / "shot.png"
    taken = _browse(page, tmp_path / "profile2", f"--screenshot={shot}", "--window-size=800,700")
    assert taken.returncode == 0 and shot.is_file(), taken.stderr[-2000:]
    assert _console(taken.stderr) == []
    width, height, rows = _png_pixels(shot.read_bytes())
    assert (width, height) == (800, 700)
    # The first chart (bars: HEAD blue, workspace orange) is on screen, in colour.
    assert _count(rows, VEGA_BLUE) > 2000 and _count(rows, VEGA_ORANGE) > 2000


def test_nan_and_infinite_values_are_gaps_not_errors() -> None:
    doc = plots.show({"p.csv": PlotSpec(), "p.json": PlotSpec()},
                     {"workspace": {"p.csv": b"step,loss\n0,0.5\n1,nan\n2,inf\n3,0.2\n",
                                    "p.json": b'[{"step": 0, "loss": NaN}, {"step": 1, '
                                              b'"loss": 0.3}]'}})
    csv_plot, json_plot = doc["plots"]
    assert csv_plot["y"] == ["loss"] and json_plot["y"] == ["loss"]
    assert [(d["x"], d["value"]) for d in csv_plot["data"]] == [(0, 0.5), (3, 0.2)]
    assert [(d["x"], d["value"]) for d in json_plot["data"]] == [(1, 0.3)]
