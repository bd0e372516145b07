import pytest

# Helper modules imported by tests: rewrite their asserts too, for readable failures.
pytest.register_assert_rewrite(
    "simulator_fixtures", "exporter_harness", "helpers_client", "browser"
)
