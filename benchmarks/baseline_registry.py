"""The scrape baseline: prometheus_client rendering the exporter's per-job series itself.

Reads a /metrics body saved by the benchmark, keeps the per-job families
(`cloudstack_async_job_*` gauges), builds a CollectorRegistry of Gauges with the same names,
label names, label values and values, and times generate_latest() on it. Run in its own
process so that a registry of 700,000 children does not weigh on anyone else's memory.

    python benchmarks/baseline_registry.py BODY_FILE [--runs 3]

prints one JSON object: {"series": .., "runs": [seconds, ...], "median": seconds}.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time

from prometheus_client import CollectorRegistry, Gauge, generate_latest

PER_JOB = re.compile(r"^(cloudstack_async_job_(?!duration)[a-z_]+)\{(.*)\} (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def unescape(value: str) -> str:
    if "\\" not in value:
        return value
    return re.sub(r"\\[\\\"n]", lambda m: UNESCAPE[m.group(0)], value)


def build(text: str) -> tuple[CollectorRegistry, int]:
    registry = CollectorRegistry()
    gauges: dict[str, Gauge] = {}
    helps: dict[str, str] = {}
    series = 0
    for line in text.splitlines():
        if line.startswith("# HELP "):
            _, _, name, doc = line.split(" ", 3)
            helps[name] = doc
            continue
        match = PER_JOB.match(line)
        if match is None:
            continue
        name, labels, value = match.groups()
        pairs = [(k, unescape(v)) for k, v in LABEL.findall(labels)]
        gauge = gauges.get(name)
        if gauge is None:
            gauge = gauges[name] = Gauge(
                name, helps.get(name, name), [k for k, _ in pairs], registry=registry
            )
        gauge.labels(*[v for _, v in pairs]).set(float(value))
        series += 1
    return registry, series


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("body")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with open(args.body, encoding="utf-8") as f:
        text = f.read()
    registry, series = build(text)
    del text
    runs = []
    for _ in range(args.runs):
        start = time.perf_counter()
        generate_latest(registry)
        runs.append(time.perf_counter() - start)
    json.dump({"series": series, "runs": runs, "median": statistics.median(runs)}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
