"""The Grafana dashboard in deploy/grafana: generated, importable anywhere, and showing every metric there is.

Why: a dashboard panel on a metric the engine does not export is empty on the day someone needs it, and nobody
notices before; a metric no panel shows is invisible.  So every query is held to runtime/metric_catalog.py in both
directions, the committed JSON must be exactly what deploy/grafana/dashboard.py writes (an edit made in Grafana
and exported over it would escape these checks), and every panel must read the ``datasource`` variable so that
the file imports into a Grafana whatever its Prometheus data source is called.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from test_alert_rules import promql_names

from tickguard.runtime.metric_catalog import CATALOG, sample_names

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "deploy" / "grafana" / "dashboard.py"
DASHBOARD = ROOT / "deploy" / "grafana" / "tickguard-dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tickguard_dashboard_generator", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the module runs
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated() -> str:
    return _generator().render()


@pytest.fixture(scope="module")
def board(generated: str) -> dict:
    return json.loads(generated)


def _panels(panels: list[dict]) -> Iterator[dict]:
    """Every panel that shows data, rows' folded-in panels included."""
    for panel in panels:
        if panel["type"] == "row":
            yield from _panels(panel.get("panels", []))
        else:
            yield panel


def _exprs(board: dict) -> Iterator[tuple[str, str]]:
    for panel in _panels(board["panels"]):
        for target in panel["targets"]:
            yield panel["title"], target["expr"]


def test_committed_json_is_what_the_generator_writes(generated: str) -> None:
    assert DASHBOARD.read_text(encoding="utf-8") == generated, (
        "deploy/grafana/tickguard-dashboard.json differs from the generator: change deploy/grafana/dashboard.py "
        "and run `python deploy/grafana/dashboard.py`; do not edit the JSON")


def test_committed_json_parses_as_a_dashboard() -> None:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert board["title"] and board["uid"]
    assert any(panel["type"] == "row" for panel in board["panels"])
    folded = [panel for row in board["panels"] if row["type"] == "row" for panel in row.get("panels", [])]
    ids = [panel["id"] for panel in [*board["panels"], *folded]]
    assert len(ids) == len(set(ids)), "panel ids are unique (Grafana links to a panel by its id)"


def test_datasource_variable_is_there(board: dict) -> None:
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance"):
        assert variables[name]["datasource"] == DATASOURCE


def test_every_panel_and_query_reads_the_datasource_variable(board: dict) -> None:
    for panel in _panels(board["panels"]):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']}: a panel without a query"
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_every_query_is_scoped_by_job_and_instance(board: dict) -> None:
    for title, expr in _exprs(board):
        selectors = re.findall(r"\{[^{}]*\}", expr)
        assert selectors, f"{title}: {expr}"
        for selector in selectors:
            assert 'job=~"$job"' in selector and 'instance=~"$instance"' in selector, f"{title}: {expr}"


def test_every_query_names_only_exported_metrics(board: dict) -> None:
    problems = {f"{title}: {expr}": names.problems for title, expr in _exprs(board)
                if (names := promql_names(expr)).problems}
    assert problems == {}


def test_variable_queries_name_exported_metrics_and_labels(board: dict) -> None:
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+), *(\w+)\)", variable["query"])
        assert match, variable["query"]
        names = promql_names(match.group(1))
        assert names.problems == []
        assert names.metrics == {"tickguard_engine_info"}
        assert match.group(2) in {"job", "instance"}


def test_every_catalog_metric_is_on_the_dashboard(board: dict) -> None:
    shown = set().union(*(promql_names(expr).metrics for _, expr in _exprs(board)))
    missing = [spec.name for spec in CATALOG if not shown & set(sample_names(spec))]
    assert missing == [], "metrics no panel shows"


def test_panels_fit_the_grid(board: dict) -> None:
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
