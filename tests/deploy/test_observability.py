"""The Grafana dashboard and the Prometheus rules: valid PromQL, naming only real metrics.

Every expression is parsed with a real PromQL parser (promql-parser), and every metric and
label it selects is looked up in the /metrics output of a running rerankd.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict

import httpx
import pytest

from tests.deploy.conftest import API_KEY, DEPLOY, load_yaml, require, rerank
from tests.server import ServerProcess

DASHBOARD = DEPLOY / "grafana" / "rerankd.json"
RULES = sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
# What Grafana substitutes before a query runs, with values of the same shape.
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
# Series that Prometheus makes itself, not rerankd.
PROMETHEUS_SERIES = {"up"}
# What the dashboard must show (the deployment issue's list), as panel-title words.
REQUIRED_PANELS = [
    "requests/s", "pairs/s", "p50", "p95", "p99", "queue depth", "batch size",
    "padding waste", "cache hit rate", "status", "429",
]  # fmt: skip


@pytest.fixture(scope="module")
def promql():
    try:
        import promql_parser
    except ImportError:
        promql_parser = None
    require(promql_parser, "promql-parser (pip)")
    return promql_parser


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def substitute(expr: str) -> str:
    """Grafana's variables: built-ins get a duration; template variables a match-all regex."""
    names = {v["name"] for v in dashboard()["templating"]["list"]}

    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name in GRAFANA_VARIABLES:
            return GRAFANA_VARIABLES[name]
        assert name in names, f"undefined dashboard variable ${name} in {expr}"
        return ".*"

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)


def dashboard_expressions() -> list[str]:
    exprs = [t["expr"] for p in panels() for t in p["targets"]]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            # label_values(METRIC, LABEL) is Grafana's, not PromQL: check METRIC as a selector.
            metric, label = re.fullmatch(
                r"label_values\((\w+), (\w+)\)", variable["query"]["query"]
            ).groups()
            exprs.append(f"count by ({label}) ({metric})")
    return [substitute(e) for e in exprs]


def rules() -> list[dict]:
    return [
        rule for path in RULES for group in load_yaml(path)["groups"] for rule in group["rules"]
    ]


def rule_expressions() -> list[str]:
    return [rule["expr"] for rule in rules()]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


# The dashboard and config on their own --------------------------------------------------


def test_the_dashboard_shows_what_operators_need() -> None:
    titles = " | ".join(p["title"].lower() for p in panels())
    for needed in REQUIRED_PANELS:
        assert needed in titles, f"no panel about {needed!r}"


def test_the_dashboard_is_well_formed() -> None:
    board = dashboard()
    assert board["uid"] == "rerankd" and board["title"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        assert panel["description"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
    (source,) = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    provisioned = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")
    assert source["query"] == provisioned["datasources"][0]["type"]
    assert source["current"]["value"] == provisioned["datasources"][0]["uid"]


def test_rules_are_well_formed() -> None:
    assert rules()
    for rule in rules():
        assert ("record" in rule) != ("alert" in rule)
        if "record" in rule:
            assert re.fullmatch(r"rerankd:[a-z_0-9]+:[a-z_0-9]+", rule["record"]), rule["record"]
        else:
            assert rule["labels"]["severity"] in {"warning", "critical"}
            assert rule["annotations"]["summary"]


def test_every_expression_is_valid_promql(promql) -> None:
    for expr in dashboard_expressions() + rule_expressions():
        try:
            promql.parse(expr)
        except ValueError as error:
            pytest.fail(f"{expr}: {error}")


# Against a running server ------------------------------------------------------------------


def exposed(server: ServerProcess) -> tuple[set[str], dict[str, set[str]], list]:
    """Sample names /metrics can expose, the label names seen on each, and the samples."""
    from prometheus_client.parser import text_string_to_metric_families

    # Traffic first, so that the labelled series exist: a miss then a hit in both caches.
    for _ in range(2):
        assert rerank(server.url).status_code == 200
    text = httpx.get(server.url + "/metrics", headers={"X-API-Key": API_KEY}, timeout=30).text
    suffixes = {
        "counter": ["_total"],
        "histogram": ["_bucket", "_sum", "_count"],
        "summary": ["", "_sum", "_count"],
    }
    names: set[str] = set()
    labels: dict[str, set[str]] = defaultdict(set)
    samples = []
    for family in text_string_to_metric_families(text):
        names.update(family.name + s for s in suffixes.get(family.type, [""]))
        for sample in family.samples:
            labels[sample.name].update(sample.labels)
            samples.append(sample)
    return names, labels, samples


def selectors(promql, expr: str) -> list:
    found: list = []

    def visit(node) -> None:
        if isinstance(node, promql.VectorSelector):
            found.append(node)

    promql.walk(promql.parse(expr), visit)
    return found


def test_every_metric_used_exists_in_metrics_output(promql, rerankd: ServerProcess) -> None:
    names, labels, samples = exposed(rerankd)
    assert "rerankd_requests_total" in names
    # The server runs as deployed, with the Redis cache: both cache backends report
    # (hits/misses/errors carry `backend`; the in-memory size gauge has no such label).
    backends = {
        s.labels["backend"]
        for s in samples
        if s.name.startswith("rerankd_cache_") and "backend" in s.labels
    }
    assert {"memory", "redis"} <= backends
    allowed = recorded_names() | PROMETHEUS_SERIES
    missing, bad_labels = set(), set()
    for expr in dashboard_expressions() + rule_expressions():
        for selector in selectors(promql, expr):
            name = selector.name
            assert name, f"a selector without a metric name in {expr}"
            if name in allowed:
                continue
            if name not in names:
                missing.add(name)
                continue
            used = {m.name for m in selector.matchers.matchers} - {"__name__", "instance", "job"}
            if labels[name] and not used <= labels[name]:
                bad_labels.add((name, tuple(sorted(used - labels[name]))))
    assert not missing, f"metrics not in rerankd's /metrics: {sorted(missing)}"
    assert not bad_labels, f"labels these metrics do not have: {sorted(bad_labels)}"


def test_every_grouping_label_exists_on_its_metrics(promql, rerankd: ServerProcess) -> None:
    _, labels, _ = exposed(rerankd)
    problems = []

    def check(expr: str) -> None:
        def visit(node) -> None:
            modifier = getattr(node, "modifier", None)
            if not isinstance(node, promql.AggregateExpr) or modifier is None:
                return
            if modifier.type != promql.AggModifierType.By:
                return
            inner = [s.name for s in selectors(promql, node.expr.prettify())]
            seen = [labels[n] | {"instance", "job"} for n in inner if labels.get(n)]
            if len(seen) == len(inner):  # every input has samples to compare with
                for label in modifier.labels:
                    if not all(label in s for s in seen):
                        problems.append(f"by ({label}) over {inner} in {expr}")

        promql.walk(promql.parse(expr), visit)

    for expr in dashboard_expressions() + rule_expressions():
        check(expr)
    assert not problems, "\n".join(problems)
