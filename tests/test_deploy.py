"""The operator kit under deploy/: rules, unit tests of the alerts, Prometheus and Alertmanager
examples, Grafana dashboard, container, Kubernetes and systemd artifacts, checked with the tools
operators use (promtool, amtool, hadolint, the Kubernetes schemas, systemd-analyze)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grafana
import pytest
import yaml
from binaries import missing, require

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus/cloudstack-job-exporter.rules.yml"
DASHBOARD = DEPLOY / "grafana/dashboards/cloudstack-job-exporter.json"
K8S = DEPLOY / "kubernetes"

# The exporter's public metric names (its documented contract); rules and dashboard may use
# nothing else, so a typo in a rule cannot pass unnoticed.
CONTRACT_METRICS = {
    "cloudstack_async_job_status",
    "cloudstack_async_job_result_code",
    "cloudstack_async_job_age_seconds",
    "cloudstack_async_job_created_timestamp_seconds",
    "cloudstack_async_job_completed_timestamp_seconds",
    "cloudstack_async_job_proc_status",
    "cloudstack_async_job_info",
    "cloudstack_async_jobs",
    "cloudstack_async_jobs_oldest_pending_age_seconds",
    "cloudstack_async_jobs_finished_total",
    "cloudstack_async_job_duration_seconds",
    "cloudstack_async_jobs_pending_by_management_server",
    "cloudstack_async_jobs_oldest_pending_age_by_management_server_seconds",
    "cloudstack_up",
    "cloudstack_api_requests_total",
    "cloudstack_api_request_duration_seconds",
    "cloudstack_exporter_poll_duration_seconds",
    "cloudstack_exporter_last_successful_poll_timestamp_seconds",
    "cloudstack_exporter_tracked_jobs",
    "cloudstack_exporter_jobs_dropped_total",
    "cloudstack_exporter_malformed_jobs_total",
    "cloudstack_exporter_build_info",
    # Self-monitoring beyond metrics.md, in the README's table.
    "cloudstack_exporter_config_last_reload_successful",
    "cloudstack_exporter_state_write_failures_total",
    # The event stream's (metrics.md, "The event stream").
    "cloudstack_exporter_events_connected",
    "cloudstack_exporter_events_received_total",
    "cloudstack_exporter_events_malformed_total",
    "cloudstack_exporter_last_event_timestamp_seconds",
    "cloudstack_exporter_event_gaps_total",
    "cloudstack_exporter_jobs_finished_by_source_total",
}


def module(name: str) -> ModuleType:
    """An importable module; skip without it, except in CI where it must be there."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing(f"{name} cannot be imported: {exc}")
        raise


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args}\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def renderer() -> ModuleType:
    """deploy/render_mixin.py, with the jsonnet package it needs."""
    module("_jsonnet")
    spec = importlib.util.spec_from_file_location("deploy_render_mixin", DEPLOY / "render_mixin.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown page."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = None if in_code else re.match(r"#{1,6}\s+(.+?)\s*#*\s*$", line)
        if not m:
            continue
        # Lower case; drop punctuation but keep letters, digits, `-` and `_`; spaces to `-`.
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def load_yaml_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return groups


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in rule_groups() for r in g["rules"] if "alert" in r]


def dashboard_exprs() -> Iterator[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for panel in board["panels"]:
        for t in panel.get("targets", []):
            yield f"{panel['title']} / {t['refId']}", t["expr"]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            # label_values(selector, label) is Grafana's; its selector is PromQL.
            m = re.fullmatch(r"label_values\((.+),\s*\w+\)", var["query"]["query"])
            assert m, var["query"]
            yield f"variable {var['name']}", m.group(1)


def substitute_grafana(expr: str) -> str:
    expr = grafana.substitute_grafana(expr)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def metric_names(expr: str) -> set[str]:
    # Not the parts of recording rule names (level:metric:operations).
    names = set(re.findall(r"(?<![:\w])(cloudstack_[a-z_]+)(?![:\w])", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


# --------------------------------------------------------------------------------- rules


def test_committed_files_are_the_rendered_mixin() -> None:
    render = renderer()
    outputs = render.outputs()
    # Every file the project ships comes from the mixin.
    assert {
        RULES,
        K8S / "monitoring/prometheusrule.yaml",
        DASHBOARD,
        ROOT / "docs/operations.md",
    } <= set(outputs)
    for path, text in outputs.items():
        assert path.read_text(encoding="utf-8") == text, f"{path} is stale: run make mixin"
    assert render.main(["--check"]) == 0


def test_every_runbook_url_points_at_a_heading_of_operations_md() -> None:
    anchors = github_anchors((ROOT / "docs/operations.md").read_text(encoding="utf-8"))
    base = "https://github.com/cloudstack-job-exporter/cloudstack-job-exporter/blob/main/docs/operations.md"
    for rule in alert_rules():
        url, anchor = rule["annotations"]["runbook_url"].split("#")
        assert url == base, rule["alert"]
        assert anchor in anchors, f"{rule['alert']}: no heading for #{anchor}"
    # The slugs are GitHub's: a heading with spaces and punctuation.
    assert {"changing-thresholds", "prometheus", "try-it-docker-compose"} <= anchors


def test_rules_pass_promtool_check(tmp_path: Path) -> None:
    promtool = require("promtool")
    out = ok(run(promtool, "check", "rules", str(RULES)))
    assert "SUCCESS" in out
    # The PrometheusRule carries exactly the same groups.
    (prom_rule,) = load_yaml_docs(K8S / "monitoring/prometheusrule.yaml")
    assert prom_rule["spec"]["groups"] == rule_groups()


def test_alert_unit_tests_pass() -> None:
    promtool = require("promtool")
    tests = sorted((DEPLOY / "prometheus/tests").glob("*.test.yml"))
    assert tests
    out = ok(run(promtool, "test", "rules", *map(str, tests)))
    assert "FAILED" not in out


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    recorded: set[str] = set()
    for path in (DEPLOY / "prometheus/tests").glob("*.test.yml"):
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
            for check in case.get("promql_expr_test", []):
                recorded |= set(re.findall(r"[a-z_]+:[a-z_0-9]+:[a-z_0-9]+", check["expr"]))
    alerts = {r["alert"] for r in alert_rules()}
    assert alerts - firing == set(), "alerts never shown firing"
    assert alerts - silent == set(), "alerts never shown not firing"
    records = {r["record"] for g in rule_groups() for r in g["rules"] if "record" in r}
    used_by_alerts = {n for r in alert_rules() for n in re.findall(r"\w+:\w+:\w+", r["expr"])}
    assert records - recorded - used_by_alerts == set(), "recording rules without a test"


def test_alert_rules_are_documented_and_labelled() -> None:
    names = []
    for rule in alert_rules():
        names.append(rule["alert"])
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook", "runbook_url"} <= set(annotations), rule[
            "alert"
        ]
        assert len(annotations["runbook"]) > 80, f"{rule['alert']}: runbook too thin"
        # `job` belongs to Prometheus: CloudStack jobs are `job_id`.
        assert not re.search(r"\bjob\s*=~?\s*\"[0-9a-f-]{8,}", rule["expr"])
    assert len(names) == len(set(names))
    # The list of conditions, each with an alert.
    assert {
        "CloudStackJobExporterDown",
        "CloudStackJobExporterAbsent",
        "CloudStackAPIUnreachable",
        "CloudStackJobExporterPollsStale",
        "CloudStackAPIAuthenticationFailing",
        "CloudStackAsyncJobFailed",
        "CloudStackAsyncJobFailureRatioHigh",
        "CloudStackAsyncJobPendingTooLong",
        "CloudStackAsyncJobBacklogHigh",
        "CloudStackCapacityErrors",
    } <= set(names)
    pending = next(r for r in alert_rules() if r["alert"] == "CloudStackAsyncJobPendingTooLong")
    threshold = float(re.search(r">\s*(\d+)", pending["expr"]).group(1))  # type: ignore[union-attr]
    assert threshold < 3600, "must fire before CloudStack's job.cancel.threshold (60 min)"


def test_rules_and_dashboard_use_only_contract_metrics() -> None:
    exprs = [r["expr"] for g in rule_groups() for r in g["rules"]]
    exprs += [e for _, e in dashboard_exprs()]
    for rule in alert_rules():
        exprs.append(rule["annotations"]["description"])
    used = set().union(*(metric_names(e) for e in exprs))
    assert used - CONTRACT_METRICS == set()


CUSTOM_CONFIG = {
    "pendingTooLongSeconds": 1200,
    "backlogJobs": 500,
    "failureRatio": 0.1,
    "failureRatioWindow": "1h",
    "exporterSelector": 'job="cs-jobs"',
    "runbookBaseURL": "https://wiki.example.com/cloudstack",
    "dashboardUid": "cs-jobs",
    "dashboardTitle": "CS jobs",
    "datasource": "Mimir",
}


def test_a_config_override_reaches_every_output() -> None:
    render = renderer()
    outputs = render.outputs(CUSTOM_CONFIG)
    rules = outputs[render.RULES_FILE]
    assert "cloudstack_async_jobs_oldest_pending_age_seconds > 1200" in rules
    assert '(cloudstack_async_jobs{status="pending"}) > 500' in rules
    assert "> 1200" in outputs[render.PROMETHEUS_RULE]
    assert 'absent(up{job="cs-jobs"})' in rules
    assert "runbook_url: https://wiki.example.com/cloudstack#cloudstackapiunreachable" in rules
    # Another failure-ratio window brings its own recording rules along.
    groups = yaml.safe_load(rules)["groups"]
    records = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    ratio = next(r for g in groups for r in g["rules"] if r.get("alert", "").endswith("RatioHigh"))
    used = set(re.findall(r"\w+:\w+:\w+", ratio["expr"]))
    assert used == {
        "cloud_cmd:cloudstack_async_jobs_failed:ratio_rate1h",
        "cloud_cmd:cloudstack_async_jobs_finished:increase1h",
    }
    assert used <= records and "> 0.1\n" in ratio["expr"]
    board = json.loads(outputs[DASHBOARD])
    assert (board["uid"], board["title"]) == ("cs-jobs", "CS jobs")
    datasource = board["templating"]["list"][0]
    assert datasource["current"]["value"] == "Mimir"
    exporter_up = next(p for p in board["panels"] if p["title"] == "Exporter targets up")
    assert exporter_up["targets"][0]["expr"] == 'up{job="cs-jobs"}'
    assert (
        "| `CloudStackAsyncJobBacklogHigh` | warning | 15m | `sum by (cloud) ("
        in outputs[render.OPERATIONS_DOC]
    )


def test_readme_mixin_example_imports_and_overrides(tmp_path: Path) -> None:
    jsonnet = module("_jsonnet")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (example,) = re.findall(r"```jsonnet\n(.*?)```", readme, re.S)
    # Where `jb install` puts the mixin.
    vendored = tmp_path / "vendor/github.com/cloudstack-job-exporter/cloudstack-job-exporter"
    vendored.mkdir(parents=True)
    (vendored / "deploy").symlink_to(DEPLOY, target_is_directory=True)
    (tmp_path / "monitoring.jsonnet").write_text(example, encoding="utf-8")
    out = json.loads(
        jsonnet.evaluate_file(
            str(tmp_path / "monitoring.jsonnet"), jpathdir=[str(tmp_path / "vendor")]
        )
    )
    rules = {r["alert"]: r for g in out["alerts"]["groups"] for r in g["rules"]}
    assert rules["CloudStackJobExporterAbsent"]["expr"] == 'absent(up{job="cloudstack"})'
    assert rules["CloudStackAsyncJobPendingTooLong"]["expr"].endswith("> 1200")
    assert rules["CloudStackJobExporterDown"]["annotations"]["runbook_url"] == (
        "https://wiki.example.com/cloudstack-runbook#cloudstackjobexporterdown"
    )
    assert out["rules"]["groups"][0]["rules"]
    (board,) = out["dashboards"].values()
    assert board["tags"] == ["cloudstack", "iaas"]


def test_rules_of_an_overridden_config_pass_promtool(tmp_path: Path) -> None:
    promtool = require("promtool")
    render = renderer()
    path = tmp_path / "custom.rules.yml"
    path.write_text(render.outputs(CUSTOM_CONFIG)[render.RULES_FILE], encoding="utf-8")
    assert "SUCCESS" in ok(run(promtool, "check", "rules", str(path)))


# ----------------------------------------------------------------------- Prometheus, AM


@pytest.mark.parametrize(
    "config", sorted(p.name for p in (DEPLOY / "prometheus").glob("prometheus*.yml"))
)
def test_prometheus_examples_pass_promtool(config: str) -> None:
    promtool = require("promtool")
    out = ok(run(promtool, "check", "config", config, cwd=DEPLOY / "prometheus"))
    assert "1 rule files found" in out  # the shipped rules are loaded, and they check too
    scrape = yaml.safe_load((DEPLOY / "prometheus" / config).read_text(encoding="utf-8"))
    jobs = {s["job_name"] for s in scrape["scrape_configs"]}
    assert jobs == {"cloudstack-job-exporter"}, "the alert rules select this job name"


def test_sharded_example_keeps_one_shard() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus-sharded.yml").read_text())
    relabel = config["scrape_configs"][0]["relabel_configs"]
    hashmod = next(r for r in relabel if r.get("action") == "hashmod")
    keep = next(r for r in relabel if r.get("action") == "keep")
    assert hashmod["modulus"] > 1 and keep["source_labels"] == [hashmod["target_label"]]
    assert 0 <= int(keep["regex"]) < hashmod["modulus"]


@pytest.mark.parametrize(
    "config", ["deploy/alertmanager/alertmanager.yml", "deploy/compose/alertmanager.yml"]
)
def test_alertmanager_config_routes_by_severity(config: str) -> None:
    amtool = require("amtool")
    ok(run(amtool, "check-config", str(ROOT / config)))
    expected = {"critical": "oncall-pager", "warning": "team-tickets", "info": "blackhole"}
    severities = {r["labels"]["severity"] for r in alert_rules()}
    assert severities <= set(expected)
    for severity, receiver in expected.items():
        result = run(
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={ROOT / config}",
            "alertname=CloudStackAsyncJobFailed",
            "cloud=prod",
            f"severity={severity}",
        )
        ok(result)
        assert result.stdout.split() == [receiver], (severity, result.stdout)


def test_alertmanager_inhibitions_name_real_alerts() -> None:
    config = yaml.safe_load((DEPLOY / "alertmanager/alertmanager.yml").read_text())
    alerts = {r["alert"] for r in alert_rules()}
    for inhibit in config["inhibit_rules"]:
        for matcher in inhibit["source_matchers"] + inhibit["target_matchers"]:
            name = re.fullmatch(r'alertname=~?"(.+)"', matcher).group(1)  # type: ignore[union-attr]
            assert set(name.split("|")) <= alerts, matcher
        # The labels that must be equal are on both alerts (`cloud` is on every series).
        for side in ("source_matchers", "target_matchers"):
            name = re.fullmatch(r'alertname=~?"(.+)"', inhibit[side][0]).group(1)  # type: ignore[union-attr]
            for rule in (r for r in alert_rules() if r["alert"] in name.split("|")):
                for label in set(inhibit["equal"]) - {"cloud"}:
                    assert re.search(rf"by \([^)]*\b{label}\b", rule["expr"]), (
                        rule["alert"],
                        label,
                    )


# ------------------------------------------------------------------------------- Grafana


def test_dashboard_structure() -> None:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"cloud", "cmd"} <= set(variables)
    titles = {p["title"] for p in board["panels"]}
    for wanted in (
        "CloudStack API up",
        "Exporter targets up",
        "Tracked jobs by status",
        "Pending backlog by command",
        "Oldest pending job age",
        "Failed jobs by command",
        "Failed jobs by result code",
        "Job duration quantiles by command (30m)",
        "Job duration",
        "Pending and failed jobs",
    ):
        assert wanted in titles
    assert {p["type"] for p in board["panels"]} >= {"heatmap", "table", "stat", "timeseries"}
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            for t in panel["targets"]:
                assert t["datasource"]["uid"] == "${datasource}"
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


def test_duration_heatmap_asks_for_exemplars() -> None:
    # The exporter attaches a job_id exemplar to each duration bucket (OpenMetrics).
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    (heatmap,) = (p for p in board["panels"] if p["type"] == "heatmap")
    assert "cloudstack_async_job_duration_seconds_bucket" in heatmap["targets"][0]["expr"]
    assert [t.get("exemplar") for t in heatmap["targets"]] == [True]
    # Only there: the other panels' queries have no histogram buckets to attach them to.
    others = [t for p in board["panels"] if p is not heatmap for t in p.get("targets", [])]
    assert not any(t.get("exemplar") for t in others)


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    promtool = require("promtool")
    rules = [
        {"record": f"dashboard:query:{i}", "expr": substitute_grafana(expr)}
        for i, (_, expr) in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = ok(run(promtool, "check", "rules", str(path)))
    assert f"SUCCESS: {len(rules)} rules found" in out


def test_dashboard_query_check_would_catch_a_broken_query(tmp_path: Path) -> None:
    promtool = require("promtool")
    path = tmp_path / "broken.rules.yml"
    rule = {"record": "dashboard:query:0", "expr": "sum by (cloud (cloudstack_up)"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": [rule]}]}))
    assert run(promtool, "check", "rules", str(path)).returncode != 0


def test_grafana_provisioning_matches_compose() -> None:
    compose = yaml.safe_load((DEPLOY / "compose/compose.yaml").read_text())
    mounts = dict(
        v.rsplit(":", 1)[0].split(":", 1)
        for v in compose["services"]["grafana"]["volumes"]
        if v.startswith(".")
    )
    dash_dir = mounts["../grafana/dashboards"]
    (provider,) = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/cloudstack-job-exporter.yml").read_text()
    )["providers"]
    assert provider["options"]["path"] == dash_dir
    env = compose["services"]["grafana"]["environment"]
    assert env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == f"{dash_dir}/{DASHBOARD.name}"
    (source,) = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"


# ------------------------------------------------------------------------------ container


def test_dockerfile_passes_hadolint() -> None:
    hadolint = require("hadolint")
    ok(run(hadolint, str(DEPLOY / "docker/Dockerfile")))


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    hadolint = require("hadolint")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install aiohttp\n")
    assert run(hadolint, str(bad)).returncode != 0


def test_dockerfile_is_slim_non_root_and_secret_free() -> None:
    text = (DEPLOY / "docker/Dockerfile").read_text(encoding="utf-8")
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(froms) >= 2 and all("slim" in f for f in froms), "multi-stage on slim images"
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert re.search(r"^HEALTHCHECK .*/-/healthy", text, re.M | re.S)
    for line in re.findall(r"^(?:ENV|ARG)\s.*$", text, re.M):
        assert not re.search(r"(?i)secret|password|api_?key|token", line), line
    ignore = (DEPLOY / "docker/Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*")] == "*", "the build context is an allow-list"
    for copied in re.findall(r"^COPY\s+(?!--from)(.+)\s+\S+$", text, re.M):
        for src in copied.split():
            assert (ROOT / src).exists(), src


def test_compose_file_parses_and_references_existing_files() -> None:
    path = DEPLOY / "compose/compose.yaml"
    compose = yaml.safe_load(path.read_text(encoding="utf-8"))
    services = compose["services"]
    assert set(services) == {"simulator", "exporter", "prometheus", "alertmanager", "grafana"}
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (path.parent / source).exists(), f"{name}: {source}"
            else:
                assert source in compose["volumes"], f"{name}: {source}"
        if "build" in service:
            context = path.parent / service["build"]["context"]
            assert (context / service["build"]["dockerfile"]).exists()
    for secret in compose["secrets"].values():
        assert (path.parent / secret["file"]).exists()
    exporter = services["exporter"]
    assert exporter["read_only"] is True
    # The pieces point at each other by service name and port.
    prometheus = yaml.safe_load((path.parent / "prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["static_configs"][0]["targets"] == ["exporter:9877"]
    assert prometheus["scrape_configs"][0]["job_name"] == "cloudstack-job-exporter"
    am = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am == ["alertmanager:9093"]
    listen = services["simulator"]["command"][
        services["simulator"]["command"].index("--listen") + 1
    ]
    config = yaml.safe_load((path.parent / "exporter.yml").read_text())
    assert config["clouds"][0]["url"] == f"http://simulator:{listen.rsplit(':', 1)[1]}/client/api"
    assert config["clouds"][0]["secret_key_file"] == "/run/secrets/simulator_secret_key"


def test_compose_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = require("promtool")
    text = (DEPLOY / "compose/prometheus.yml").read_text()
    shutil.copy(RULES, tmp_path / RULES.name)
    (tmp_path / "prometheus.yml").write_text(text.replace("/etc/prometheus/", ""))
    ok(run(promtool, "check", "config", "prometheus.yml", cwd=tmp_path))


# ----------------------------------------------------------------------------- Kubernetes


def k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [(path, d) for d in load_yaml_docs(path)]
    return docs


def test_kubernetes_manifests_validate_against_the_schemas() -> None:
    kv = module("kubernetes_validate")
    core = [(p, d) for p, d in k8s_docs() if not d["apiVersion"].startswith("monitoring.")]
    assert {d["kind"] for _, d in core} >= {"Deployment", "Service", "ConfigMap", "Secret"}
    for _path, doc in core:
        kv.validate(doc, kv.latest_version(), strict=True)  # raises on any problem
    # Strict validation does reject a typo.
    deployment = next(d for _, d in core if d["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, kv.latest_version(), strict=True)


def by_kind(kind: str) -> dict[str, Any]:
    (doc,) = [d for p, d in k8s_docs() if d["kind"] == kind and "per-cloud" not in str(p)]
    return doc


def test_deployment_is_hardened_and_wired() -> None:
    deployment = by_kind("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    assert by_kind("ConfigMap")["metadata"]["name"] == volumes["config"]["configMap"]["name"]
    config_file = next(a for a in container["args"] if a.startswith("--config.file="))
    directory, key = config_file.split("=", 1)[1].rsplit("/", 1)
    assert mounts[directory] is volumes["config"] and key in by_kind("ConfigMap")["data"]
    assert by_kind("Secret")["metadata"]["name"] == volumes["credentials"]["secret"]["secretName"]
    claim = by_kind("PersistentVolumeClaim")["metadata"]["name"]
    assert mounts["/var/lib/cloudstack-job-exporter"]["persistentVolumeClaim"]["claimName"] == claim
    # Every secret file the configuration names is a key of the Secret, under its mount.
    config = yaml.safe_load(by_kind("ConfigMap")["data"]["config.yaml"])
    secret_dir = next(p for p, v in mounts.items() if "secret" in v)
    keys = set(by_kind("Secret")["stringData"])
    for cloud in config["clouds"]:
        for field in ("api_key_file", "secret_key_file"):
            directory, key = cloud[field].rsplit("/", 1)
            assert directory == secret_dir and key in keys
    assert config["state_file"].startswith("/var/lib/cloudstack-job-exporter/")
    assert not any("value" in e for e in container.get("env", [])), "no literal env secrets"


def test_service_monitor_selects_the_service() -> None:
    service = by_kind("Service")
    monitor = by_kind("ServiceMonitor")
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports
    # The job label the alert rules select comes from this Service label.
    assert labels[monitor["spec"]["jobLabel"]] == "cloudstack-job-exporter"
    down = next(r for r in alert_rules() if r["alert"] == "CloudStackJobExporterDown")
    assert down["expr"] == 'up{job="cloudstack-job-exporter"} == 0'
    rule = by_kind("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == monitor["metadata"]["labels"]["release"]


def test_kustomizations_reference_existing_files() -> None:
    for path in K8S.rglob("kustomization.yaml"):
        doc = yaml.safe_load(path.read_text())
        entries = doc.get("resources", []) + [p["path"] for p in doc.get("patches", [])]
        assert entries, path
        for entry in entries:
            assert (path.parent / entry).exists(), f"{path}: {entry}"
    (per_cloud,) = load_yaml_docs(K8S / "per-cloud/prod/config.yaml")
    assert per_cloud["metadata"]["name"] == by_kind("ConfigMap")["metadata"]["name"]


def shipped_configs() -> list[tuple[str, str]]:
    configs = [
        ("kubernetes", by_kind("ConfigMap")["data"]["config.yaml"]),
        ("per-cloud", load_yaml_docs(K8S / "per-cloud/prod/config.yaml")[0]["data"]["config.yaml"]),
        ("compose", (DEPLOY / "compose/exporter.yml").read_text()),
    ]
    return configs


@pytest.mark.parametrize("name", ["kubernetes", "per-cloud", "compose"])
def test_shipped_exporter_configurations_are_valid(name: str, tmp_path: Path) -> None:
    config_mod = module("exporter.config")
    text = dict(shipped_configs())[name]
    # The secret files and the state directory exist only where the examples are deployed.
    for prefix in (
        "/etc/cloudstack-job-exporter/secrets/",
        "/run/secrets/",
        "/var/lib/cloudstack-job-exporter/",
    ):
        text = text.replace(prefix, f"{tmp_path}/")
    for path in re.findall(rf"{re.escape(str(tmp_path))}/[\w.-]+", text):
        Path(path).write_text("not-a-real-key\n")
    (tmp_path / "config.yaml").write_text(text)
    config = config_mod.load_config(str(tmp_path / "config.yaml"), environ={})
    assert config.clouds


# -------------------------------------------------------------------------------- systemd


UNIT = DEPLOY / "systemd/cloudstack-job-exporter.service"


def test_systemd_unit_is_hardened() -> None:
    text = UNIT.read_text()
    directives = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )
    for key, value in {
        "DynamicUser": "yes",
        "StateDirectory": "cloudstack-job-exporter",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "RestartPreventExitStatus": "2",
    }.items():
        assert directives.get(key) == value, key
    assert "LoadCredential" in directives and "EnvironmentFile" in directives
    assert "--config.check" in directives["ExecStartPre"]


def test_systemd_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    analyze = require("systemd-analyze")
    # The binary is not installed here; everything else is verified as written.
    unit = tmp_path / UNIT.name
    unit.write_text(
        UNIT.read_text().replace(
            "/opt/cloudstack-job-exporter/bin/cloudstack-job-exporter",
            shutil.which("true") or "/bin/true",
        )
    )
    result = run(analyze, "verify", str(unit))
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    # And verification does notice a misspelt directive.
    unit.write_text(unit.read_text().replace("ProtectSystem=", "ProtectSytem="))
    assert "Unknown key" in run(analyze, "verify", str(unit)).stderr


def test_systemd_socket_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    analyze = require("systemd-analyze")
    true = shutil.which("true") or "/bin/true"
    service = tmp_path / UNIT.name
    service.write_text(
        UNIT.read_text().replace("/opt/cloudstack-job-exporter/bin/cloudstack-job-exporter", true)
    )
    socket_unit = tmp_path / "cloudstack-job-exporter.socket"
    socket_unit.write_text((UNIT.parent / socket_unit.name).read_text())
    result = run(analyze, "verify", str(socket_unit), str(service))
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    assert "ListenStream=9877" in socket_unit.read_text()
    # The service is what the socket starts, and the flag it needs is documented there.
    assert "ARGS=--web.systemd-socket" in socket_unit.read_text()
    assert "$ARGS" in UNIT.read_text()
