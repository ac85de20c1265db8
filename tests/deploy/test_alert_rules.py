"""The Prometheus alert rules in deploy/prometheus: valid, unit-tested case by case, and about metrics that exist.

Why: an alert is only ever exercised on the bad day it is for.  One on a misspelled metric or label never fires,
one without a test may fire on nothing or on everything, and both look fine in review.  So ``promtool`` checks
the rules and runs their unit tests (alerts_test.yml), every alert must have a case where it fires and one where
it stays quiet, and every name in every expression must be one the engine exports (runtime/metric_catalog.py).

The PromQL name check (``promql_names``) lives here and is shared with test_dashboard.py: a deliberately small
reader, not a PromQL parser - it removes strings, ranges and label lists, then every identifier left must be a
PromQL function, aggregation or keyword, or an exported sample name; a label in a selector must be one of that
metric's labels, a label in by/without/on/ignoring one of some metric's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tickguard.runtime.metric_catalog import CATALOG, EXPORTED_SAMPLES, sample_names

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"

# ---- the PromQL name check ------------------------------------------------------------------------------------

# Prometheus 2.x functions and aggregation operators (https://prometheus.io/docs/prometheus/latest/querying/)
PROMQL_FUNCTIONS = frozenset({
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh", "avg_over_time", "ceil",
    "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh", "count_over_time", "day_of_month", "day_of_week",
    "day_of_year", "days_in_month", "deg", "delta", "deriv", "exp", "floor", "histogram_count",
    "histogram_fraction", "histogram_quantile", "histogram_stddev", "histogram_stdvar", "histogram_sum",
    "holt_winters", "hour", "idelta", "increase", "irate", "label_join", "label_replace", "last_over_time", "ln",
    "log10", "log2", "mad_over_time", "max_over_time", "min_over_time", "minute", "month", "pi", "predict_linear",
    "present_over_time", "quantile_over_time", "rad", "rate", "resets", "round", "scalar", "sgn", "sin", "sinh",
    "sort", "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time", "tan", "tanh", "time",
    "timestamp", "vector", "year", "avg", "bottomk", "count", "count_values", "group", "max", "min", "quantile",
    "stddev", "stdvar", "sum", "topk"
})
PROMQL_KEYWORDS = frozenset({"and", "or", "unless", "atan2", "bool", "offset", "inf", "nan"})
# labels Prometheus adds to every series it scrapes (a histogram's _bucket series also has "le")
SCRAPE_LABELS = frozenset({"job", "instance"})
NOT_IN_CATALOG = {"up": ()}  # Prometheus' own per-target series, with only the scrape labels

FAMILY_OF_SAMPLE = {sample: spec for spec in CATALOG for sample in sample_names(spec)}
ALL_LABELS = frozenset(label for spec in CATALOG for label in spec.labels) | SCRAPE_LABELS | {"le"}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)?\s*\{([^{}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
# an identifier not glued to a word, a $variable or a number (5m, 1e-9), and whether a call follows it
_IDENTIFIER = re.compile(r"(?<![\w$.:])([a-zA-Z_:][\w:]*)(\s*\()?")
_TICKGUARD_NAME = re.compile(r"tickguard_[a-z0-9_]+")


@dataclass
class Names:
    metrics: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)


def _labels_of(metric: str) -> frozenset[str] | None:
    """The labels a series of ``metric`` can carry; None for a name the engine does not export."""
    if metric in NOT_IN_CATALOG:
        return SCRAPE_LABELS | frozenset(NOT_IN_CATALOG[metric])
    spec = FAMILY_OF_SAMPLE.get(metric)
    if spec is None:
        return None
    return SCRAPE_LABELS | frozenset(spec.labels) | ({"le"} if metric.endswith("_bucket") else set())


def _metric(name: str, names: Names) -> None:
    if _labels_of(name) is None:
        names.problems.append(f"unknown metric {name!r}")
    else:
        names.metrics.add(name)


def promql_names(expr: str) -> Names:
    """The metric names ``expr`` reads, and every name in it that is not PromQL, an exported metric or its label."""
    names = Names()
    for raw in _TICKGUARD_NAME.findall(expr):  # belt and braces: any tickguard_ word at all, wherever it stands
        if raw not in EXPORTED_SAMPLES:
            names.problems.append(f"unknown metric {raw!r}")
    text = _STRING.sub('""', expr)
    for selector in _SELECTOR.finditer(text):
        metric, matchers = selector.group(1), selector.group(2)
        labels = set(_MATCHER_LABEL.findall(matchers))
        if metric and metric not in PROMQL_KEYWORDS:
            _metric(metric, names)
            allowed = _labels_of(metric) or frozenset()
            names.problems += [f"label {label!r} is not a label of {metric}" for label in sorted(labels - allowed)]
        else:
            names.problems.append(f"selector without a metric name: {{{matchers}}}")
    text = _SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", text)
    for grouping in _GROUPING.finditer(text):
        labels = {label.strip() for label in grouping.group(1).split(",") if label.strip()}
        names.problems += [f"unknown label {label!r} in {grouping.group(0)!r}" for label in sorted(labels - ALL_LABELS)]
    text = _RANGE.sub(" ", _GROUPING.sub(" ", text))
    for identifier in _IDENTIFIER.finditer(text):
        word, is_call = identifier.group(1), identifier.group(2)
        if is_call:
            if word not in PROMQL_FUNCTIONS:
                names.problems.append(f"unknown function {word!r}")
        elif word not in PROMQL_KEYWORDS and word not in names.metrics:
            _metric(word, names)
    return names


def test_the_name_check_catches_typos() -> None:
    """The check itself: a typo in a metric, a label, a grouping label or a function is reported."""
    good = 'sum by (lane) (rate(tickguard_throttle_sent_total{job=~"$job", lane="entry"}[$__rate_interval]))'
    assert promql_names(good).problems == []
    assert promql_names(good).metrics == {"tickguard_throttle_sent_total"}
    assert promql_names("histogram_quantile(0.99, sum by (le) (rate(tickguard_order_ack_seconds_bucket[5m])))"
                        ).problems == []
    assert promql_names('up{job="tickguard"} == 0 or absent(up{job="tickguard"})').problems == []
    for bad in ("rate(tickguard_throttle_sent[5m])",  # a counter without _total
                "tickguard_order_ack_seconds > 1",  # a histogram's family name is no series
                "rate(tickguard_throttle_sent_total{lan=\"entry\"}[5m])",  # a label typo
                "sum by (lnae) (tickguard_throttle_queue_depth)",
                "histogram_quantil(0.5, rate(tickguard_order_ack_seconds_bucket[5m]))",
                "tickguard_blind_trades > 0 and on(instance) node_load1 > 3",  # not ours
                '{__name__="tickguard_blind_trades"}'):
        assert promql_names(bad).problems, bad


# ---- the rules and their tests ----------------------------------------------------------------------------


def _rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    assert [g["name"] for g in groups] == ["tickguard"]
    return groups[0]["rules"]


def _alerts() -> dict[str, dict]:
    rules = _rules()
    alerts = {rule["alert"]: rule for rule in rules if "alert" in rule}
    assert len(alerts) == len(rules), "alerts.yml holds alerting rules only, each under its own name"
    return alerts


def _promtool() -> str:
    """promtool, or a skip where it is not installed - a failure where ./dev test promised it (it installs it)."""
    path = shutil.which("promtool")
    if path is None:
        why = "promtool is not installed (Debian package prometheus; ./dev test installs it)"
        if os.environ.get("TICKGUARD_REQUIRE_PROMETHEUS"):
            pytest.fail(why)
        pytest.skip(why)
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def test_promtool_accepts_the_rules() -> None:
    result = _run(_promtool(), "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = _run(_promtool(), "test", "rules", str(ALERTS_TEST))
    assert result.returncode == 0, result.stdout + result.stderr


def test_example_prometheus_config_is_valid_and_loads_the_rules() -> None:
    """The example config scrapes the job the rules select and loads this rule file."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    assert config["rule_files"] == ["alerts.yml"]
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "tickguard"]
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:9464"]
    result = _run(_promtool(), "check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_actionable() -> None:
    """Each alert waits a stated time, says how bad it is and tells the operator what it means and what to do."""
    for name, rule in _alerts().items():
        assert name.startswith("Tickguard"), name
        assert "for" in rule, f"{name}: no for: (an explicit 0s says 'at once' on purpose)"
        assert rule.get("labels", {}).get("severity") in {"critical", "warning"}, name
        annotations = rule.get("annotations", {})
        assert annotations.get("summary", "").strip(), f"{name}: no summary"
        assert len(annotations.get("description", "")) > 100, f"{name}: the description must tell what to do"


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    alerts = _alerts()
    cases = [case for group in yaml.safe_load(ALERTS_TEST.read_text(encoding="utf-8"))["tests"]
             for case in group.get("alert_rule_test", [])]
    # a case naming no existing alert would pass vacuously: a quiet case for a typo is no test
    assert {case["alertname"] for case in cases} <= set(alerts), "alerts_test.yml names an alert alerts.yml lacks"
    firing = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert sorted(set(alerts) - firing) == [], "alerts without a case where they fire"
    assert sorted(set(alerts) - quiet) == [], "alerts without a case where they stay quiet"


@pytest.mark.parametrize("name", sorted(_alerts()))
def test_alert_expression_names_only_exported_metrics(name: str) -> None:
    names = promql_names(_alerts()[name]["expr"])
    assert names.problems == []
    assert names.metrics, "an alert reads at least one metric"
