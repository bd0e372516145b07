"""Grafana's dashboard variables, replaced by values Prometheus accepts, so a dashboard query
can be checked or run as it is written."""

from __future__ import annotations

GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$cloud": ".*",
    "$cmd": ".*",
}


def substitute_grafana(expr: str) -> str:
    # Longest names first: $__rate_interval before $__range.
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    return expr
