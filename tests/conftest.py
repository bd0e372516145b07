import pytest

# Helper modules imported by tests: rewrite their asserts too, for readable failures.
pytest.register_assert_rewrite(
    "simulator_fixtures", "exporter_harness", "helpers_client", "browser", "rabbitmq"
)

from hypothesis import HealthCheck, settings  # noqa: E402

# Property tests check behaviour, not speed: on a loaded machine (CI, several suites at once)
# generating an example may be slow, which is no failure of the code under test.
settings.register_profile("suite", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("suite")
