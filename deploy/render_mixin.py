#!/usr/bin/env python3
"""Render the monitoring mixin (deploy/mixin) into the files the project ships.

Writes the Prometheus rule file, the prometheus-operator PrometheusRule, the Grafana dashboards
and the alert reference in docs/operations.md. Edit the mixin (thresholds live in
deploy/mixin/config.libsonnet), then run `make mixin` or `python deploy/render_mixin.py`;
`--check` fails when a rendered file is out of date (the test suite runs it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
MIXIN = ROOT / "deploy/mixin"
RULES_FILE = ROOT / "deploy/prometheus/cloudstack-job-exporter.rules.yml"
PROMETHEUS_RULE = ROOT / "deploy/kubernetes/monitoring/prometheusrule.yaml"
DASHBOARDS = ROOT / "deploy/grafana/dashboards"
OPERATIONS_DOC = ROOT / "docs/operations.md"
DOC_BEGIN = "<!-- BEGIN GENERATED ALERT REFERENCE (deploy/render_mixin.py) -->"
DOC_END = "<!-- END GENERATED ALERT REFERENCE -->"
HEADER = (
    "# Rendered from the monitoring mixin (deploy/mixin) by deploy/render_mixin.py.\n"
    "# Edit the mixin and run `make mixin`.\n"
)
# Prometheus's documented order; jsonnet would sort the keys.
RULE_KEYS = ("record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations")
# What a notification shows first comes first; other annotations follow by name.
FIRST_ANNOTATIONS = ("summary", "description")


def evaluate(config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The mixin's rules, alerts and dashboards, with `config` merged into its _config."""
    try:
        import _jsonnet  # the `jsonnet` package
    except ImportError as exc:
        raise SystemExit(f"the jsonnet package is needed: pip install jsonnet ({exc})") from None
    # JSON is jsonnet: the override merges like `+ { _config+:: {...} }` in a user's file.
    snippet = (
        f"local m = (import 'mixin.libsonnet') + {{ _config+:: {json.dumps(config or {})} }};\n"
        "{ rules: m.prometheusRules, alerts: m.prometheusAlerts,"
        " dashboards: m.grafanaDashboards }"
    )
    out: dict[str, Any] = json.loads(
        _jsonnet.evaluate_snippet("render_mixin", snippet, jpathdir=[str(MIXIN)])
    )
    return out


def ordered_rule(rule: dict[str, Any]) -> dict[str, Any]:
    unknown = set(rule) - set(RULE_KEYS)
    assert not unknown, f"unknown rule fields {unknown} in {rule.get('alert') or rule['record']}"
    ordered = {k: rule[k] for k in RULE_KEYS if k in rule}
    if "annotations" in ordered:
        annotations = ordered["annotations"]
        keys = [k for k in FIRST_ANNOTATIONS if k in annotations]
        keys += sorted(set(annotations) - set(keys))
        ordered["annotations"] = {k: annotations[k] for k in keys}
    return ordered


def rule_groups(mixin: dict[str, Any]) -> dict[str, Any]:
    groups = mixin["rules"].get("groups", []) + mixin["alerts"].get("groups", [])
    return {
        "groups": [
            {**g, "rules": [ordered_rule(r) for r in g["rules"]]} for g in groups if g["rules"]
        ]
    }


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Multi-line expressions read best as literal blocks.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)


def prometheus_rule(groups: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "cloudstack-job-exporter",
            "labels": {
                "app.kubernetes.io/name": "cloudstack-job-exporter",
                "app.kubernetes.io/component": "metrics",
                # kube-prometheus's default ruleSelector; adjust to your Prometheus resource.
                "release": "prometheus",
            },
        },
        "spec": groups,
    }


def alert_reference(groups: dict[str, Any]) -> str:
    alerts = [r for g in groups["groups"] for r in g["rules"] if "alert" in r]
    lines = [
        DOC_BEGIN,
        "",
        "| alert | severity | for | fires when |",
        "|---|---|---|---|",
    ]
    for a in alerts:
        expr = " ".join(a["expr"].split()).replace("|", "\\|")
        severity = a["labels"]["severity"]
        lines.append(f"| `{a['alert']}` | {severity} | {a.get('for', '0m')} | `{expr}` |")
    lines.append("")
    # Each heading is the anchor of the alert's runbook_url.
    for a in alerts:
        lines += [f"### {a['alert']}", "", a["annotations"]["runbook"], ""]
    lines.append(DOC_END)
    return "\n".join(lines)


def outputs(config: dict[str, Any] | None = None) -> dict[Path, str]:
    mixin = evaluate(config)
    groups = rule_groups(mixin)
    out = {
        RULES_FILE: HEADER + to_yaml(groups),
        PROMETHEUS_RULE: HEADER + to_yaml(prometheus_rule(groups)),
    }
    for name, board in mixin["dashboards"].items():
        out[DASHBOARDS / name] = json.dumps(board, indent=2) + "\n"
    doc = OPERATIONS_DOC.read_text(encoding="utf-8") if OPERATIONS_DOC.exists() else ""
    if DOC_BEGIN in doc and DOC_END in doc:
        head, rest = doc.split(DOC_BEGIN, 1)
        tail = rest.split(DOC_END, 1)[1]
        out[OPERATIONS_DOC] = head + alert_reference(groups) + tail
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="fail if a rendered file is out of date"
    )
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(str(path.relative_to(ROOT)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print("out of date (run make mixin): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
