"""Prometheus exporter for Apache CloudStack asynchronous jobs."""

# The one place of the version: pyproject.toml reads it from here (setuptools `attr:`), so the
# wheel's metadata, --version and cloudstack_exporter_build_info always agree.
__version__ = "0.1.0"
