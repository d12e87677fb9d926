"""The files under deploy/: they parse, promtool accepts them, the alerts fire when they should,
and every metric they name is one a worker exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from workflows_worker.metrics import METRIC_NAMES

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ALERTS = DEPLOY / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "workflows-dashboard.json"

_METRIC = re.compile(r"\bworkflows_[A-Za-z0-9_]*")
_SERIES_SUFFIXES = ("_bucket", "_sum", "_count", "_created")
# Grafana's built-in variables, given values Prometheus accepts, to check panel queries as PromQL.
_GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not on PATH; install it (Debian: `apt-get install -y prometheus`) "
            "so the Prometheus config and alert rules are checked"
        )
    return path


def _run_promtool(*args: str) -> None:
    result = subprocess.run(
        [_promtool(), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"


def _yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml"))


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def _dashboard_panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in _dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # panels folded into a collapsed row
    return panels


def _dashboard_expressions() -> list[str]:
    exprs = [t["expr"] for p in _dashboard_panels() for t in p.get("targets", []) if "expr" in t]
    for variable in _dashboard()["templating"]["list"]:
        query = variable.get("query")
        if variable.get("type") == "query":
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def _alert_rules() -> list[dict[str, Any]]:
    return [rule for group in _load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def _metric_names(exprs: list[str]) -> set[str]:
    names: set[str] = set()
    for expr in exprs:
        for name in _METRIC.findall(expr):
            for suffix in _SERIES_SUFFIXES:
                if name.endswith(suffix):
                    name = name.removesuffix(suffix)
                    break
            names.add(name)
    return names


def test_every_yaml_file_under_deploy_parses() -> None:
    files = _yaml_files()
    assert {p.relative_to(DEPLOY).as_posix() for p in files} >= {
        "compose.yaml",
        "prometheus.yml",
        "alerts.yml",
        "kubernetes/worker-deployment.yaml",
        "kubernetes/migrate-job.yaml",
        "kubernetes/secret.example.yaml",
    }
    for path in files:
        documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        assert documents, path
        assert all(isinstance(doc, dict) for doc in documents), path


def test_grafana_dashboard_parses_with_unique_panel_ids_and_queries() -> None:
    panels = _dashboard_panels()
    ids = [p["id"] for p in panels]

    assert len(ids) == len(set(ids))
    assert all(p.get("targets") for p in panels if p["type"] != "row")


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    _run_promtool("check", "config", str(DEPLOY / "prometheus.yml"))


def test_alert_rules_pass_promtool() -> None:
    _run_promtool("check", "rules", str(ALERTS))


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = []
    for i, expr in enumerate(_dashboard_expressions()):
        if expr.startswith("label_values("):  # a Grafana function, not PromQL
            continue
        for variable, value in _GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        expr = expr.replace("$queue", ".*")
        assert "$" not in expr, f"unhandled Grafana variable in {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    rules_file = tmp_path / "dashboard-rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    _run_promtool("check", "rules", str(rules_file))


def test_alerts_and_dashboard_name_only_metrics_a_worker_exports() -> None:
    alert_names = _metric_names([rule["expr"] for rule in _alert_rules()])
    dashboard_names = _metric_names(_dashboard_expressions())

    assert alert_names >= {
        "workflows_workers_alive",
        "workflows_queue_depth",
        "workflows_executions_finished_total",
        "workflows_queue_oldest_pending_age_seconds",
    }
    assert alert_names <= METRIC_NAMES, alert_names - METRIC_NAMES
    # The dashboard shows every family the worker exports, and nothing else.
    assert dashboard_names == METRIC_NAMES, dashboard_names ^ METRIC_NAMES


def _annotations(alertname: str, **values: str) -> dict[str, str]:
    """The annotations promtool should render, for the template forms alerts.yml uses."""
    (rule,) = [r for r in _alert_rules() if r["alert"] == alertname]
    rendered = {}
    for key, template in rule["annotations"].items():
        text = template.replace("{{ $labels.queue }}", values.get("queue", ""))
        text = text.replace("{{ $value | humanizePercentage }}", values.get("percentage", ""))
        text = text.replace("{{ $value | humanizeDuration }}", values.get("duration", ""))
        assert "{{" not in text, f"extend _annotations for {text}"
        rendered[key] = text
    return rendered


def test_alerts_fire_on_their_conditions_and_only_then(tmp_path: Path) -> None:
    no_workers = _annotations("WorkflowsNoLiveWorkers")
    tests = [
        {
            # Every worker scraped, all reading 0 live workers (their heartbeats are stale).
            "interval": "1m",
            "input_series": [
                {"series": 'workflows_workers_alive{instance="w1"}', "values": "0x10"},
                {"series": 'workflows_workers_alive{instance="w2"}', "values": "0x10"},
            ],
            "alert_rule_test": [
                {"eval_time": "1m", "alertname": "WorkflowsNoLiveWorkers", "exp_alerts": []},
                {
                    "eval_time": "5m",
                    "alertname": "WorkflowsNoLiveWorkers",
                    "exp_alerts": [
                        {"exp_labels": {"severity": "critical"}, "exp_annotations": no_workers}
                    ],
                },
            ],
        },
        {
            # No worker scraped at all: nothing reports 0, the series is absent.
            "interval": "1m",
            "input_series": [{"series": 'up{job="workflows-worker"}', "values": "0x10"}],
            "alert_rule_test": [
                {
                    "eval_time": "5m",
                    "alertname": "WorkflowsNoLiveWorkers",
                    "exp_alerts": [
                        {"exp_labels": {"severity": "critical"}, "exp_annotations": no_workers}
                    ],
                }
            ],
        },
        {
            "interval": "1m",
            "input_series": [
                {"series": 'workflows_workers_alive{instance="w1"}', "values": "2x10"},
                {"series": 'workflows_workers_alive{instance="w2"}', "values": "2x10"},
            ],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "WorkflowsNoLiveWorkers", "exp_alerts": []}
            ],
        },
        {
            # Two workers report the same growing backlog: one alert for the queue, not two.
            "interval": "1m",
            "input_series": [
                {
                    "series": f'workflows_queue_depth{{instance="{w}",queue="default",'
                    f'status="pending"}}',
                    "values": "0+10x40",
                }
                for w in ("w1", "w2")
            ]
            + [
                {
                    "series": 'workflows_queue_depth{instance="w1",queue="flat",status="pending"}',
                    "values": "50x40",
                },
                {
                    "series": 'workflows_queue_depth{instance="w1",queue="draining",'
                    'status="pending"}',
                    "values": "400-10x40",
                },
                {
                    "series": 'workflows_queue_depth{instance="w1",queue="parked",'
                    'status="waiting"}',
                    "values": "0+10x40",
                },
            ],
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": "WorkflowsQueueDepthGrowing", "exp_alerts": []},
                {
                    "eval_time": "30m",
                    "alertname": "WorkflowsQueueDepthGrowing",
                    "exp_alerts": [
                        {
                            "exp_labels": {"severity": "warning", "queue": "default"},
                            "exp_annotations": _annotations(
                                "WorkflowsQueueDepthGrowing", queue="default"
                            ),
                        }
                    ],
                },
            ],
        },
        {
            # default: 2 of 10 executions that ended failed for good (20%); its many attempts
            # (retries, recoveries) must not dilute that. healthy: 1 of 100 (1%).
            "interval": "1m",
            "input_series": [
                {
                    "series": f'workflows_executions_finished_total{{queue="{queue}",kind="job",'
                    f'status="{status}"}}',
                    "values": f"0+{per_minute}x20",
                }
                for queue, status, per_minute in (
                    ("default", "failed", 2),
                    ("default", "completed", 7),
                    ("default", "cancelled", 1),
                    ("healthy", "failed", 1),
                    ("healthy", "completed", 99),
                )
            ]
            + [
                {
                    "series": f'workflows_attempts_total{{queue="default",kind="job",'
                    f'outcome="{outcome}"}}',
                    "values": "0+20x20",
                }
                for outcome in ("failed", "lost", "timed_out")
            ],
            "alert_rule_test": [
                {"eval_time": "3m", "alertname": "WorkflowsHighFailureRate", "exp_alerts": []},
                {
                    "eval_time": "15m",
                    "alertname": "WorkflowsHighFailureRate",
                    "exp_alerts": [
                        {
                            "exp_labels": {"severity": "warning", "queue": "default"},
                            "exp_annotations": _annotations(
                                "WorkflowsHighFailureRate", queue="default", percentage="20%"
                            ),
                        }
                    ],
                },
            ],
        },
        {
            # stuck: its oldest due execution ages a minute a minute (nobody serves it), as
            # two workers report; busy: a deep backlog served in order, always 60 s old;
            # blip: old for 4 minutes, then served (shorter than the alert's `for`).
            "interval": "1m",
            "input_series": [
                {
                    "series": f'workflows_queue_oldest_pending_age_seconds{{instance="{w}",'
                    'queue="stuck"}',
                    "values": "0+60x20",
                }
                for w in ("w1", "w2")
            ]
            + [
                {
                    "series": 'workflows_queue_oldest_pending_age_seconds{instance="w1",'
                    'queue="busy"}',
                    "values": "60x20",
                },
                {
                    "series": 'workflows_queue_oldest_pending_age_seconds{instance="w1",'
                    'queue="blip"}',
                    "values": "0 0 0 400 400 400 400 0x13",
                },
            ],
            "alert_rule_test": [
                # stuck passes 300 s at minute 6: pending until minute 11.
                {"eval_time": "9m", "alertname": "WorkflowsOldestPendingTooOld", "exp_alerts": []},
                {
                    "eval_time": "12m",
                    "alertname": "WorkflowsOldestPendingTooOld",
                    "exp_alerts": [
                        {
                            "exp_labels": {"severity": "warning", "queue": "stuck"},
                            "exp_annotations": _annotations(
                                "WorkflowsOldestPendingTooOld", queue="stuck", duration="12m 0s"
                            ),
                        }
                    ],
                },
            ],
        },
    ]
    test_file = tmp_path / "alerts_test.yml"
    test_file.write_text(
        yaml.safe_dump({"rule_files": [str(ALERTS)], "evaluation_interval": "1m", "tests": tests})
    )

    _run_promtool("test", "rules", str(test_file))


def test_compose_runs_the_migration_before_the_workers() -> None:
    services = _load_yaml(DEPLOY / "compose.yaml")["services"]
    workers = [name for name, s in services.items() if s.get("command", [None])[0] == "worker"]

    assert len(workers) == 2
    assert services["migrate"]["entrypoint"] == ["workflows"]
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in services["postgres"]
    for name in workers:
        migrate = services[name]["depends_on"]["migrate"]
        assert migrate["condition"] == "service_completed_successfully"
    targets = _load_yaml(DEPLOY / "prometheus.yml")["scrape_configs"][0]["static_configs"][0]
    assert sorted(targets["targets"]) == sorted(f"{name}:9100" for name in workers)


def test_kubernetes_workers_outlive_their_shutdown_grace_and_probe_healthz() -> None:
    deployment = _load_yaml(DEPLOY / "kubernetes" / "worker-deployment.yaml")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}

    assert deployment["spec"]["replicas"] == 2
    grace = float(env["WORKFLOWS_WORKER_SHUTDOWN_GRACE"]["value"])
    assert pod["spec"]["terminationGracePeriodSeconds"] > grace
    assert env["WORKFLOWS_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "currant-database"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": 9100}
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9100"
    assert env["WORKFLOWS_WORKER_METRICS_PORT"]["value"] == "9100"


def test_kubernetes_secrets_provide_the_urls_the_workloads_read() -> None:
    secrets = {
        doc["metadata"]["name"]: doc
        for doc in yaml.safe_load_all(
            (DEPLOY / "kubernetes" / "secret.example.yaml").read_text(encoding="utf-8")
        )
    }
    job = _load_yaml(DEPLOY / "kubernetes" / "migrate-job.yaml")
    deployment = _load_yaml(DEPLOY / "kubernetes" / "worker-deployment.yaml")
    refs = [
        e["valueFrom"]["secretKeyRef"]
        for workload in (job, deployment)
        for c in workload["spec"]["template"]["spec"]["containers"]
        for e in c["env"]
        if "valueFrom" in e
    ]

    assert {r["name"] for r in refs} == {"currant-database", "currant-database-owner"}
    for ref in refs:
        assert ref["key"] in secrets[ref["name"]]["stringData"]
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert migrate["command"] == ["workflows"]
    assert migrate["args"] == ["migrate"]
