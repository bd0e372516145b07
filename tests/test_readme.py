"""The README's promises: its metrics table is what the exporter serves, its PromQL parses."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml
from binaries import require
from exporter_harness import Exporter, cloud_yaml, write_config
from simulator_fixtures import SimHandle, _running

pytest_plugins = ["simulator_fixtures"]

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_table() -> dict[str, tuple[str, set[str]]]:
    text = README.read_text()
    start = text.index("<!-- metrics-table")
    end = text.index("<!-- end of metrics-table -->")
    rows: dict[str, tuple[str, set[str]]] = {}
    for line in text[start:end].splitlines():
        match = re.match(r"\| `([a-z_]+)` \| (\w+) \| ([^|]*) \|", line)
        if match:
            name, kind, labels = match.groups()
            rows[name] = (kind, {label.strip() for label in labels.split(",") if label.strip()})
    return rows


def event_stream_rows() -> set[str]:
    """The metrics the README's table says are for clouds with an event stream only."""
    return set(
        re.findall(r"^\| `([a-z_]+)` \|[^|]*\|[^|]*\| event stream only", README.read_text(), re.M)
    )


def served_families(text: str) -> dict[str, tuple[str, set[str]]]:
    """name -> (type, label names) from the text format, named as users query them."""
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, tuple[str, set[str]]] = {}
    for family in text_string_to_metric_families(text):
        labels = {k for s in family.samples for k in s.labels if k != "le"}
        name = family.name + "_total" if family.type == "counter" else family.name
        families[name] = (family.type, labels)
    return families


async def test_metrics_table_matches_what_is_served(simulator: SimHandle, tmp_path: Path) -> None:
    ids = await simulator.create_jobs(3, cmd="DeployVMCmd", instance_type="VirtualMachine")
    # Only servers before 4.17.1 list pseudo jobs, which the skipped counter needs.
    async for old in _running("+0000", seed=5, version="4.16.1.0"):
        await old.create_jobs(1, pseudo=True)
        config = write_config(
            tmp_path / "c.yaml", [cloud_yaml("a", simulator), cloud_yaml("b", old)]
        )
        async with Exporter(config) as exporter:
            await simulator.finish(ids[0], "failure", result_code=533, errortext="no capacity")
            await simulator.add_fault("jobstatus_abc", commands=["listAsyncJobs"], count=1)
            await exporter.cycle()
            _, _, body = await exporter.get("/metrics")
    served = served_families(body.decode())
    documented = readme_table()
    assert set(documented) == set(served), (
        f"missing from README: {sorted(set(served) - set(documented))}; "
        f"not served: {sorted(set(documented) - set(served))}"
    )
    for name, (kind, labels) in documented.items():
        served_kind, served_labels = served[name]
        assert served_kind == kind, name
        if name in event_stream_rows():
            # No cloud here has an event stream: its families are served without series.
            assert not served_labels, name
            continue
        assert served_labels == labels, name


def readme_expressions() -> list[str]:
    """Each PromQL expression of the README, on one line."""
    blocks = re.findall(r"```promql\n(.*?)```", README.read_text(), flags=re.S)
    return [
        " ".join(chunk.split())
        for block in blocks
        for chunk in re.split(r"\n\s*\n|\n(?=\S)", block)
        if chunk.strip()
    ]


def test_readme_promql_parses(tmp_path: Path) -> None:
    promtool = require("promtool")
    expressions = readme_expressions()
    assert len(expressions) >= 8
    rules = {
        "groups": [
            {
                "name": "readme",
                "rules": [
                    {"record": f"readme:expr{i}", "expr": e} for i, e in enumerate(expressions)
                ],
            }
        ]
    }
    path = tmp_path / "readme.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_readme_failure_queries_count_a_first_failure(tmp_path: Path) -> None:
    """The counter of a (cloud, cmd, status, result_code) is born at 1 with its first failure:
    the "what failed" and capacity queries must show that 1, not increase()'s 0."""
    promtool = require("promtool")
    queries = [
        e
        for e in readme_expressions()
        if "cloudstack_async_jobs_finished_total" in e and "[1h]" in e and "rate(" not in e
    ]
    assert len(queries) == 2, queries  # what failed; capacity trouble
    series = (
        "cloudstack_async_jobs_finished_total"
        '{{cloud="prod", cmd="{cmd}", status="failed", result_code="533"}}'
    )
    tests = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # First failure 30 minutes before the evaluation.
                    {"series": series.format(cmd="DeployVMCmd"), "values": "_x60 1x40"},
                    # Failed long ago, nothing since: not in the last hour.
                    {"series": series.format(cmd="StartVMCmd"), "values": "3x100"},
                ],
                "promql_expr_test": [
                    {
                        "expr": query,
                        "eval_time": "90m",
                        "exp_samples": [
                            {
                                "labels": '{cloud="prod", cmd="DeployVMCmd", result_code="533"}',
                                "value": 1,
                            }
                        ],
                    }
                    for query in queries
                ],
            }
        ],
    }
    path = tmp_path / "readme.test.yml"
    path.write_text(yaml.safe_dump(tests))
    result = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_readme_configuration_examples_are_valid(tmp_path: Path) -> None:
    from exporter.config import parse_config

    blocks = [
        b
        for b in re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)
        if "clouds:" in b
    ]
    assert blocks
    for block in blocks:
        # The files an example names exist on the operator's machine: here, in tmp_path.
        for path in set(re.findall(r"(/run/secrets/\w+|/etc/\S+\.(?:txt|pem))", block)):
            local = tmp_path / path.lstrip("/")
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text("example-value\n")
            block = block.replace(path, str(local))
        environ = {name: "example-value" for name in re.findall(r"\$\{(\w+)\}", block)}
        config = parse_config(yaml.safe_load(block), environ=environ)
        assert config.clouds
