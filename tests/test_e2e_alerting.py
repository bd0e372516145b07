"""End to end: the simulator, the exporter, Prometheus with the shipped rules and Alertmanager
with the shipped routing deliver the expected alerts to a webhook, and every query of the rules
and of the dashboard finds data.

The rules are the shipped ones with only their `for:` durations shortened (thresholds and
expressions unchanged: the scenario makes jobs old and numerous enough instead); Alertmanager
keeps the shipped routes and inhibitions, with the receivers pointed at this test's webhook.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from binaries import missing, require
from grafana import substitute_grafana
from ports import free_port
from rabbitmq import RabbitNode, unique_name

pytest_plugins = ["rabbitmq"]

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus/cloudstack-job-exporter.rules.yml"
DASHBOARD = DEPLOY / "grafana/dashboards/cloudstack-job-exporter.json"
WRONG_SECRET = "not-the-secret-key"
T = TypeVar("T")

pytestmark = pytest.mark.timeout(240)


def http_json(url: str, body: Any = None, timeout: float = 5.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def wait_for(what: str, check: Callable[[], T | None], timeout: float) -> T:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.25)


@dataclass
class Webhook:
    """Alertmanager's notifications, as received: (path, alert) pairs."""

    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def alerts(self) -> list[tuple[str, dict[str, Any]]]:
        with self.lock:
            return list(self.received)


@pytest.fixture(scope="module")
def webhook() -> Iterator[tuple[Webhook, int]]:
    hook = Webhook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with hook.lock:
                hook.received += [(self.path, a) for a in body["alerts"]]
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield hook, server.server_address[1]
    server.shutdown()
    server.server_close()


@dataclass
class Stack:
    workdir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    sim: str = ""
    exporter: str = ""
    prometheus: str = ""
    alertmanager: str = ""

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 (closed by the child's exit)
        self.procs[name] = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, env=env
        )
        log.close()

    def alive(self, name: str) -> bool:
        return self.procs[name].poll() is None

    def logs(self) -> str:
        parts = []
        for name in self.procs:
            text = (self.workdir / f"{name}.log").read_text(errors="replace")
            parts.append(f"--- {name} ---\n" + "\n".join(text.splitlines()[-25:]))
        return "\n".join(parts)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        answer = http_json(url)
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result


def shortened_rules() -> dict[str, Any]:
    """The shipped rules with every `for:` at 1s; nothing else changes."""
    shipped = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    rules: dict[str, Any] = json.loads(json.dumps(shipped))
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
    for ours, theirs in zip(rules["groups"], shipped["groups"], strict=True):
        for a, b in zip(ours["rules"], theirs["rules"], strict=True):
            assert a["expr"] == b["expr"] and a.get("labels") == b.get("labels")
    return rules


def alertmanager_config(webhook_port: int) -> dict[str, Any]:
    """The shipped routing and inhibitions, waiting less, sending to the test's webhook."""
    config: dict[str, Any] = yaml.safe_load((DEPLOY / "alertmanager/alertmanager.yml").read_text())
    config["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    for receiver in config["receivers"]:
        if "webhook_configs" in receiver:
            receiver["webhook_configs"] = [
                {
                    "url": f"http://127.0.0.1:{webhook_port}/{receiver['name']}",
                    "send_resolved": False,
                }
            ]
    return config


def drive(sim: str) -> None:
    """Make jobs fail, one command fail often, jobs pend too long and a backlog build up."""

    def create(**spec: Any) -> None:
        http_json(f"{sim}/sim/jobs", spec)

    # Pending for 2000 s already: beyond the 30-minute threshold.
    create(cmd="StopVMCmd", count=1, created_ago=2000)
    # More than 100 pending jobs.
    create(cmd="CreateSnapshotCmd", count=110)
    # Capacity trouble.
    create(cmd="CreateVolumeCmd", count=2, duration=2, outcome="failure", result_code=533)
    # A command that fails three times in four, finishing over several seconds so that the
    # counters grow while Prometheus watches; each job outlives a poll (1 s) to be seen pending.
    for i in range(8):
        create(
            cmd="MigrateVMCmd",
            count=3,
            duration=2 + i,
            outcome="failure",
            result_code=530,
            errortext="Unable to migrate VM: host is unreachable",
        )
        create(cmd="MigrateVMCmd", count=1, duration=2 + i)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, webhook: tuple[Webhook, int], rabbitmq: RabbitNode
) -> Iterator[Stack]:
    prometheus_bin = require("prometheus")
    alertmanager_bin = require("prometheus-alertmanager", "alertmanager")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    version = subprocess.run(
        [sys.executable, "-m", "exporter", "--version"], env=env, capture_output=True, timeout=30
    )
    if version.returncode != 0:
        missing(f"the exporter does not run: {version.stderr.decode()[-300:]}")

    s = Stack(tmp_path_factory.mktemp("e2e"))
    exchange = unique_name("cloudstack-events")  # the sim cloud publishes its job events there
    try:
        s.start(
            "simulator",
            sys.executable,
            "-m",
            "cloudstack_simulator",
            "--listen",
            "127.0.0.1:0",
            "--events.url",
            rabbitmq.url,
            "--events.exchange",
            exchange,
            env=env,
        )

        def sim_url() -> str | None:
            m = re.search(
                r"listening on (http://\S+)/client/api", (s.workdir / "simulator.log").read_text()
            )
            return m.group(1) if m else None

        s.sim = wait_for("the simulator", sim_url, 20)

        exporter_port, prometheus_port, am_port = free_port(), free_port(), free_port()
        closed_port = free_port()  # nothing listens there
        config = {
            "poll_interval": "1s",
            "state_file": str(s.workdir / "state.json"),
            "clouds": [
                {
                    "name": "sim",
                    "url": f"{s.sim}/client/api",
                    "api_key": "sim-admin-api-key",
                    "secret_key_file": str(s.workdir / "secret"),
                    "events": {
                        "url": rabbitmq.url,
                        "exchange": exchange,
                        "queue": unique_name("exporter"),
                    },
                },
                {
                    "name": "badauth",
                    "url": f"{s.sim}/client/api",
                    "api_key": "sim-admin-api-key",
                    "secret_key": WRONG_SECRET,
                },
                {
                    "name": "badlogin",
                    "url": f"{s.sim}/client/api",
                    "username": "admin",
                    "password": WRONG_SECRET,
                },
                {
                    "name": "down",
                    "url": f"http://127.0.0.1:{closed_port}/client/api",
                    "api_key": "sim-admin-api-key",
                    "secret_key_file": str(s.workdir / "secret"),
                    "timeout": "1s",
                    # Its broker is down too.
                    "events": {"url": f"amqp://guest:guest@127.0.0.1:{closed_port}/"},
                },
            ],
        }
        (s.workdir / "secret").write_text("sim-admin-secret-key\n")
        (s.workdir / "exporter.yml").write_text(yaml.safe_dump(config))
        s.start(
            "exporter",
            sys.executable,
            "-m",
            "exporter",
            "--config.file=exporter.yml",
            f"--web.listen-address=127.0.0.1:{exporter_port}",
            env=env,
        )
        s.exporter = f"http://127.0.0.1:{exporter_port}"

        (s.workdir / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager_config(webhook[1])))
        s.start(
            "alertmanager",
            alertmanager_bin,
            "--config.file=alertmanager.yml",
            f"--storage.path={s.workdir / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
        )
        s.alertmanager = f"http://127.0.0.1:{am_port}"

        (s.workdir / "rules.yml").write_text(yaml.safe_dump(shortened_rules()))
        prometheus_config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["rules.yml"],
            "alerting": {
                "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
            },
            "scrape_configs": [
                {
                    "job_name": "cloudstack-job-exporter",
                    "static_configs": [
                        {"targets": [f"127.0.0.1:{exporter_port}", f"127.0.0.1:{closed_port}"]}
                    ],
                }
            ],
        }
        (s.workdir / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config))
        s.start(
            "prometheus",
            prometheus_bin,
            "--config.file=prometheus.yml",
            f"--storage.tsdb.path={s.workdir / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
            # Exemplars lead from a duration bucket to the job behind it.
            "--enable-feature=exemplar-storage",
        )
        s.prometheus = f"http://127.0.0.1:{prometheus_port}"

        def ready(url: str) -> bool:
            for name in s.procs:
                assert s.alive(name), f"{name} exited"
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)

        wait_for("the exporter", lambda: ready(f"{s.exporter}/-/ready"), 30)
        wait_for("Alertmanager", lambda: ready(f"{s.alertmanager}/-/ready"), 30)
        wait_for("Prometheus", lambda: ready(f"{s.prometheus}/-/ready"), 30)
        # Scraped at least once before the jobs start to finish.
        wait_for("a scrape", lambda: s.query('cloudstack_up{cloud="sim"} == 1'), 30)
        drive(s.sim)
        yield s
    except BaseException:
        print(s.logs())
        raise
    finally:
        s.stop()


EXPECTED = {
    # alertname, distinguishing labels -> the receiver the shipped routing picks
    (
        "CloudStackAsyncJobFailed",
        (("cloud", "sim"), ("cmd", "MigrateVMCmd"), ("result_code", "530")),
    ): "team-tickets",
    (
        "CloudStackAsyncJobFailureRatioHigh",
        (("cloud", "sim"), ("cmd", "MigrateVMCmd")),
    ): "oncall-pager",
    ("CloudStackAsyncJobPendingTooLong", (("cloud", "sim"), ("cmd", "StopVMCmd"))): "team-tickets",
    ("CloudStackAsyncJobBacklogHigh", (("cloud", "sim"),)): "team-tickets",
    (
        "CloudStackCapacityErrors",
        (("cloud", "sim"), ("cmd", "CreateVolumeCmd"), ("result_code", "533")),
    ): "team-tickets",
    ("CloudStackAPIAuthenticationFailing", (("cloud", "badauth"),)): "oncall-pager",
    ("CloudStackAPIAuthenticationFailing", (("cloud", "badlogin"),)): "oncall-pager",
    ("CloudStackAPIUnreachable", (("cloud", "down"),)): "oncall-pager",
    ("CloudStackEventStreamDisconnected", (("cloud", "down"),)): "team-tickets",
    ("CloudStackJobExporterDown", ()): "team-tickets",
}


def matches(alert: dict[str, Any], name: str, labels: tuple[tuple[str, str], ...]) -> bool:
    return alert["labels"]["alertname"] == name and all(
        alert["labels"].get(k) == v for k, v in labels
    )


def test_expected_alerts_reach_the_webhook_through_the_shipped_routes(
    stack: Stack, webhook: tuple[Webhook, int]
) -> None:
    hook = webhook[0]

    def missing() -> list[Any]:
        got = hook.alerts()
        return [k for k in EXPECTED if not any(matches(a, *k) for _, a in got)]

    try:
        wait_for("every expected alert", lambda: not missing() or None, 90)
    except AssertionError:
        names = sorted(
            {(p, a["labels"]["alertname"], a["labels"].get("cloud", "")) for p, a in hook.alerts()}
        )
        pytest.fail(f"missing {missing()}; received {names}\n{stack.logs()}")

    for (name, labels), receiver in EXPECTED.items():
        paths = {p for p, a in hook.alerts() if matches(a, name, labels)}
        assert paths == {f"/{receiver}"}, (name, paths)

    got = hook.alerts()
    failed = next(
        a for _, a in got if matches(a, "CloudStackAsyncJobFailed", (("cmd", "MigrateVMCmd"),))
    )
    # The description names the failed jobs and why, from the per-job series.
    assert "Unable to migrate VM: host is unreachable" in failed["annotations"]["description"]
    pending = next(a for _, a in got if matches(a, "CloudStackAsyncJobPendingTooLong", ()))
    assert "Oldest:" in pending["annotations"]["description"]
    assert all(a["annotations"].get("runbook") for _, a in got)
    # Shipped inhibition: a failure already reported as a capacity error is not sent twice.
    assert not any(
        matches(a, "CloudStackAsyncJobFailed", (("result_code", "533"),)) for _, a in got
    )
    down = next(a for _, a in got if matches(a, "CloudStackJobExporterDown", ()))
    assert down["labels"]["instance"] != stack.exporter.removeprefix("http://")


def rule_exprs() -> list[tuple[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [(r.get("record") or r["alert"], r["expr"]) for g in groups for r in g["rules"]]


def dashboard_exprs() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [
        (f"{p['title']}/{t['refId']}", t["expr"])
        for p in board["panels"]
        for t in p.get("targets", [])
    ]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((.+),\s*\w+\)", var["query"]["query"])
            assert m
            exprs.append((f"variable {var['name']}", m.group(1)))
    out = []
    for where, expr in exprs:
        out.append((where, substitute_grafana(expr)))
    return out


def test_every_recording_rule_and_dashboard_query_returns_data(
    stack: Stack, webhook: tuple[Webhook, int]
) -> None:
    # After the alerts, so the scenario has run its course.
    wait_for("alerts", lambda: webhook[0].alerts(), 90)
    records = [(n, e) for n, e in rule_exprs() if ":" in n]
    for where, expr in records + dashboard_exprs():
        result = wait_for(f"data for {where}: {expr}", functools.partial(stack.query, expr), 20)
        assert result, where


def test_every_series_an_alert_selects_exists(stack: Stack, webhook: tuple[Webhook, int]) -> None:
    wait_for("alerts", lambda: webhook[0].alerts(), 90)
    for name, expr in rule_exprs():
        if ":" in name:
            continue
        # Every vector selector of the expression, matchers included, finds series.
        for selector in re.findall(
            r"(?<![:\w])((?:cloudstack_\w+|up|cloud_cmd\w*:\w+:\w+)(?:\{[^}]*\})?)", expr
        ):
            result = wait_for(f"{name}: {selector}", functools.partial(stack.query, selector), 20)
            assert result, (name, selector)


def test_a_duration_bucket_leads_to_the_job_behind_it(stack: Stack) -> None:
    # Prometheus scrapes OpenMetrics, where each bucket carries its latest job as an exemplar.
    def exemplars() -> list[dict[str, Any]] | None:
        now = time.time()
        query = urllib.parse.urlencode(
            {
                "query": 'cloudstack_async_job_duration_seconds_bucket{cmd="MigrateVMCmd"}',
                "start": now - 600,
                "end": now + 60,
            }
        )
        answer = http_json(f"{stack.prometheus}/api/v1/query_exemplars?{query}")
        found = [e for series in answer["data"] for e in series["exemplars"]]
        return found or None

    found = wait_for("an exemplar", exemplars, 60)
    truth = http_json(f"{stack.sim}/sim/jobs?status=all&limit=100000")
    jobs = {j["jobid"]: j for j in truth["jobs"]}
    for exemplar in found:
        job = jobs[exemplar["labels"]["job_id"]]
        assert job["cmd"].endswith("MigrateVMCmd")
        assert float(exemplar["value"]) > 0
