"""The CloudWatch dashboard in template.yaml (issue 12 item 6): its body is JSON once the
template's parameters and names are substituted, it draws what the issue asks for, and every
custom metric it names is one the code emits (found in the code itself, so a renamed metric
fails here instead of leaving an empty graph)."""

from __future__ import annotations

import ast
import json
import re

from phonon_outbound.observability import NAMESPACE, SERVICE
from phonon_outbound_dev.local.cfn import load_template

from ..conftest import ROOT

# What the picture needs from our own metrics (namespace PhononOutbound).
REQUIRED = {"CallsAccepted", "WebhooksReceived", "OutcomeAnswered", "OutcomeNoAnswer", "OutcomeFailed",
            "ActiveJobs", "CircuitOpen"}
EMITTERS = ("count", "count_by")


def emitted_metrics() -> set[str]:
    """Metric names the layer's code emits: string constants in the name argument of every
    `count(...)` / `count_by(...)` call (a conditional or a `.get(…, default)` included), and
    the values of module-level `*_METRICS` dicts (a name looked up per value)."""
    names: set[str] = set()
    for path in (ROOT / "layers" / "outbound" / "phonon_outbound").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and node.args:
                func = node.func
                fname = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                if fname in EMITTERS:
                    names |= {c.value for c in ast.walk(node.args[0])
                              if isinstance(c, ast.Constant) and isinstance(c.value, str)}
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict) and any(
                    isinstance(t, ast.Name) and t.id.endswith("METRICS") for t in node.targets):
                names |= {v.value for v in node.value.values if isinstance(v, ast.Constant) and isinstance(v.value, str)}
    return {n for n in names if re.fullmatch(r"[A-Z][A-Za-z]+", n)}


def dashboard(records_per_minute: str = "12345") -> dict:
    template = load_template(ROOT / "template.yaml")
    res = template["Resources"]["Dashboard"]
    assert res["Type"] == "AWS::CloudWatch::Dashboard"
    body = res["Properties"]["DashboardBody"]["Fn::Sub"]
    params = {k: str(v.get("Default", "")) for k, v in template["Parameters"].items()}
    params["RecordsPerMinute"] = records_per_minute

    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name in params:
            return params[name]
        if name in ("AWS::Region", "AWS::StackName"):
            return {"AWS::Region": "eu-west-1", "AWS::StackName": "camp"}[name]
        logical, _, attr = name.partition(".")
        assert logical in template["Resources"], f"${{{name}}} names no resource"
        return f"{logical}-{attr}"

    text = re.sub(r"\$\{([^}!]+)\}", sub, body)
    assert "${" not in text
    return json.loads(text)


def metric_rows(doc: dict) -> list[list]:
    return [row for w in doc["widgets"] if w["type"] == "metric" for row in w["properties"]["metrics"]]


def own_metrics(doc: dict) -> set[str]:
    names = {row[1] for row in metric_rows(doc) if row and row[0] == NAMESPACE}
    for row in metric_rows(doc):
        if isinstance(row[0], dict):
            names |= set(re.findall(r'MetricName="(\w+)"', row[0].get("expression", "")))
    return names


def test_the_body_is_json_with_the_limit_as_a_line():
    doc = dashboard("12345")
    calls = next(w for w in doc["widgets"] if "CallsAccepted" in json.dumps(w))
    assert calls["properties"]["annotations"]["horizontal"][0]["value"] == 12345
    assert all(w["properties"].get("region", "eu-west-1") == "eu-west-1" for w in doc["widgets"])


def test_every_own_metric_it_draws_is_emitted_by_the_code():
    drawn, emitted = own_metrics(dashboard()), emitted_metrics()
    assert drawn >= REQUIRED, f"the dashboard lacks {REQUIRED - drawn}"
    assert drawn <= emitted, f"the dashboard draws metrics nothing emits: {drawn - emitted}"


def test_the_outcome_mix_it_draws_is_every_outcome_metric_the_webhook_emits():
    from phonon_outbound.reports import GROUP_METRICS

    drawn = {n for n in own_metrics(dashboard()) if n.startswith("Outcome")}
    assert drawn == set(GROUP_METRICS.values())
    assert drawn <= emitted_metrics(), f"the dashboard draws outcome metrics nothing emits: {drawn - emitted_metrics()}"


def test_own_metrics_have_the_dimension_powertools_writes():
    own = [row for row in metric_rows(dashboard()) if row and row[0] == NAMESPACE]
    assert own  # the dashboard draws our metrics at all
    for row in own:
        assert row[2:4] == ["service", SERVICE], row
    circuit = [r[0]["expression"] for r in metric_rows(dashboard()) if isinstance(r[0], dict)]
    assert any("{PhononOutbound,flow,service}" in e and "CircuitOpen" in e for e in circuit)


def test_queue_depth_oldest_age_and_dead_letters():
    rows = [r for r in metric_rows(dashboard()) if r and r[0] == "AWS/SQS"]
    by_queue = {(r[1], r[3]) for r in rows}
    assert ("ApproximateNumberOfMessagesVisible", "ChunkQueue-QueueName") in by_queue
    assert ("ApproximateAgeOfOldestMessage", "ChunkQueue-QueueName") in by_queue
    assert ("ApproximateNumberOfMessagesVisible", "ChunkDeadLetterQueue-QueueName") in by_queue


def test_outputs_name_the_dashboard():
    outputs = load_template(ROOT / "template.yaml")["Outputs"]
    assert outputs["DashboardName"]["Value"] == {"Ref": "Dashboard"}
    assert "#dashboards:name=${Dashboard}" in outputs["DashboardUrl"]["Value"]["Fn::Sub"]

