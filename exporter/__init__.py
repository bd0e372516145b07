"""Prometheus exporter for Apache CloudStack asynchronous jobs."""

__version__ = "0.1.0"
