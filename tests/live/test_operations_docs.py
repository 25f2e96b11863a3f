"""docs/deploy cannot rot: the manifest's probes are what a live worker answers, on the port the
settings give it, and every metric the alert rules and the dashboard read is in its /metrics."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError

import pytest
import yaml
from sqlalchemy import Engine

from tests.steps import RECORD_VIEW, add_posts
from worker.config import Settings
from worker.contracts import PUBLISHED_AT_HEADER
from worker.development.live import PROJECT_ROOT, LiveStack, LiveWorker, wait_until
from worker.development.processes import free_port

DEPLOY = PROJECT_ROOT / "docs" / "deploy"
# Metrics that are not the worker's, and who provides them.
NOT_THE_WORKERS = {
    "up": "Prometheus itself, one series per scrape target",
    "kube_pod_status_ready": "kube-state-metrics",
}
PROMISED = {
    "worker_tasks_total",
    "worker_task_duration_seconds",
    "worker_task_queue_wait_seconds",
    "worker_queue_messages",
    "worker_queue_oldest_age_seconds",
    "worker_active_tasks",
    "worker_children",
    "worker_dead_letters",
    "worker_outbox_pending",
    "worker_outbox_oldest_age_seconds",
    "worker_view_buffer_pending_views",
}
PROBES = {"startupProbe": "/livez", "livenessProbe": "/livez", "readinessProbe": "/readyz"}


def manifests() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()) if doc]


def deployment(component: str) -> dict[str, Any]:
    (found,) = (
        doc
        for doc in manifests()
        if doc["kind"] == "Deployment"
        and doc["metadata"]["labels"]["app.kubernetes.io/component"] == component
    )
    return found


def only_container(manifest: dict[str, Any]) -> dict[str, Any]:
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    return container


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}


def setting(container: dict[str, Any], name: str) -> str:
    """The value the container gives a setting: its env, else the setting's default."""
    return env_of(container).get(name.upper(), str(Settings.model_fields[name].default))


def probe_port(container: dict[str, Any], probe: dict[str, Any]) -> int:
    port = probe["httpGet"]["port"]
    if isinstance(port, int):
        return port
    (number,) = (p["containerPort"] for p in container["ports"] if p["name"] == port)
    return int(number)


# PromQL ---------------------------------------------------------------------------------------


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not its functions, labels or keywords)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)  # label matchers, ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if expr[match.end() :].lstrip().startswith("("):  # a function or an aggregation
            continue
        if match.group() not in {"and", "or", "unless", "bool", "offset"}:
            names.add(match.group())
    return names


def alert_expressions() -> dict[str, str]:
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    return {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}


def dashboard_expressions() -> dict[str, str]:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    return {
        f"{panel['title']} {target['refId']}": target["expr"]
        for panel in dashboard["panels"]
        for target in panel["targets"]
    }


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, task) (rate(worker_task_queue_wait_seconds_bucket"
        '{task=~"a|b"}[5m]))) / on (task) max(up{job="x"}) > 0 and kube_pod_status_ready == 0'
    )
    assert metric_names(expr) == {
        "worker_task_queue_wait_seconds_bucket",
        "up",
        "kube_pod_status_ready",
    }


def used_metrics() -> dict[str, set[str]]:
    """Every metric the alert rules and the dashboard read, with where each is read."""
    used: dict[str, set[str]] = {}
    for source, expressions in (
        ("alerts.yml", alert_expressions()),
        ("grafana-dashboard.json", dashboard_expressions()),
    ):
        for name, expr in expressions.items():
            for metric in metric_names(expr):
                used.setdefault(metric, set()).add(f"{source}: {name}")
    return used


# The manifest, without a worker ---------------------------------------------------------------


def test_the_manifest_probes_the_settings_port_on_the_worker_paths() -> None:
    worker = only_container(deployment("worker"))
    port = int(setting(worker, "worker_http_port"))

    assert port == Settings.model_fields["worker_http_port"].default
    for kind, path in PROBES.items():
        assert worker[kind]["httpGet"]["path"] == path, kind
        assert probe_port(worker, worker[kind]) == port, kind


def test_the_manifest_lets_running_tasks_finish_and_runs_exactly_one_beat() -> None:
    worker, beat = deployment("worker"), deployment("beat")
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]

    assert grace > int(setting(only_container(worker), "task_time_limit"))
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"]["type"] == "Recreate"
    assert "beat" in only_container(beat)["args"]
    assert not {"--beat", "-B"} & set(only_container(worker)["args"])
    assert only_container(worker)["args"][:4] == ["celery", "-A", "worker.app", "worker"]
    assert int(setting(only_container(worker), "worker_concurrency")) >= 1  # set, not per CPU


def test_prometheus_scrapes_the_manifests_probe_port_and_the_rules_name_its_job() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    kept = {
        rule["source_labels"][0]: rule["regex"]
        for rule in job["relabel_configs"]
        if rule.get("action") == "keep"
    }
    worker = only_container(deployment("worker"))
    (port_name,) = {p["name"] for p in worker["ports"]}

    assert job["metrics_path"] == "/metrics"
    assert kept["__meta_kubernetes_pod_container_port_name"] == port_name
    assert (
        kept["__meta_kubernetes_pod_label_app_kubernetes_io_name"]
        == (deployment("worker")["metadata"]["labels"]["app.kubernetes.io/name"])
    )
    assert config["rule_files"] == ["alerts.yml"]
    assert f'up{{job="{job["job_name"]}"}}' in alert_expressions()["WorkerMetricsMissing"]


def test_the_docs_read_only_the_workers_metrics_and_those_named_as_others() -> None:
    others = {name for name in used_metrics() if not name.startswith("worker_")}
    assert others <= set(NOT_THE_WORKERS), used_metrics()


# A live worker --------------------------------------------------------------------------------


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except HTTPError as error:
        return error.code, error.read().decode()
    except (URLError, ConnectionError):
        return 0, ""


def exposed_series(text: str) -> set[str]:
    """The names of the series in a Prometheus text exposition (comments left out)."""
    return {
        re.split(r"[{\s]", line, maxsplit=1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


@pytest.fixture
def worker_with_beat(live_stack: LiveStack, tmp_path: Path) -> tuple[LiveWorker, int]:
    port = free_port()
    env = {"WORKER_HTTP_PORT": str(port), "WORKER_HTTP_HOST": "127.0.0.1"}
    beat = ["--beat", "--schedule", str(tmp_path / "beat-schedule")]
    return live_stack.start_worker(concurrency=2, env=env, extra_args=beat), port


def test_a_live_worker_answers_the_manifests_probes_and_serves_every_metric_the_docs_use(
    live_stack: LiveStack, live_db: Engine, worker_with_beat: tuple[LiveWorker, int]
) -> None:
    # Given a worker with embedded beat, its probes on a port of its own
    worker, port = worker_with_beat
    container = only_container(deployment("worker"))

    # Then each path the manifest probes answers 200 once the worker is ready
    for kind in PROBES:
        path = container[kind]["httpGet"]["path"]
        wait_until(lambda p=path: get(port, p)[0] == 200, timeout=30, what=f"{kind} {path}")

    # When it has run a task whose message carries its publish time, as the typed client's do
    post = add_posts(live_db, 1)[0]
    with live_stack.producer() as client:
        live_stack.send(client, RECORD_VIEW, post, headers={PUBLISHED_AT_HEADER: time.time()})

    # Then every worker_ metric the alert rules and the dashboard read is in /metrics, the
    # backlog gauges included once beat has had a pool child sample them
    used = used_metrics()
    wanted = {name for name in used if name.startswith("worker_")}

    def missing() -> set[str]:
        worker.check_alive()
        status, body = get(port, "/metrics")
        return wanted - exposed_series(body) if status == 200 else wanted

    try:
        wait_until(lambda: not missing(), timeout=90, interval=0.5, what="the docs' metrics")
    except AssertionError:
        pytest.fail(f"not in /metrics: { {name: sorted(used[name]) for name in missing()} }")
    # And between them, the rules and the dashboard read every metric the worker promises
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in wanted}
    assert families == PROMISED
