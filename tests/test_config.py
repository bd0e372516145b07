"""Configuration loading: every rule is reported with its key path, all problems at once."""

from __future__ import annotations

import dataclasses
import re
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest
import trustme

from exporter import config as config_module
from exporter.config import (
    DEFAULT_DURATION_BUCKETS,
    CloudConfig,
    Config,
    ConfigError,
    DiscoveryConfig,
    EventsConfig,
    Secret,
    load_config,
    parse_config,
    parse_duration,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.yaml"
SECRET = "s3cr3t-VALUE-never-shown"
API_KEY = "api-KEY-never-shown"

CLOUD = f"""\
clouds:
  - name: prod
    url: https://cloud.example.com/client/api
    api_key: {API_KEY}
    secret_key: {SECRET}
"""


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, environ: Mapping[str, str] | None = None) -> Config:
    return load_config(str(write(tmp_path, text)), environ=environ or {})


def problems(tmp_path: Path, text: str, environ: Mapping[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, environ)
    found = caught.value.problems
    assert str(caught.value) == "\n".join(found)
    joined = "\n".join(found)
    assert SECRET not in joined and API_KEY not in joined
    return found


def cloud_with(extra: str, *, credentials: bool = True) -> str:
    """A one-cloud config with `extra` lines (indented like the cloud's keys) appended."""
    lines = [
        "clouds:",
        "  - name: prod",
        "    url: https://cloud.example.com/client/api",
    ]
    if credentials:
        lines += [f"    api_key: {API_KEY}", f"    secret_key: {SECRET}"]
    lines += ["    " + line for line in textwrap.dedent(extra).splitlines() if line.strip()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- valid files


def test_minimal_config_gets_the_documented_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, CLOUD)
    assert config.poll_interval == 5.0
    assert config.state_file is None
    assert config.retention == 3600.0
    assert config.max_tracked_jobs == 100_000
    assert config.per_job_series is True
    assert config.duration_buckets == DEFAULT_DURATION_BUCKETS
    assert config.duration_buckets[0] == 1.0 and config.duration_buckets[-1] == 4 * 3600.0
    (cloud,) = config.clouds
    assert cloud.name == "prod"
    assert cloud.url == "https://cloud.example.com/client/api"
    assert cloud.api_key is not None and cloud.api_key.reveal() == API_KEY
    assert cloud.secret_key is not None and cloud.secret_key.reveal() == SECRET
    assert cloud.username is None and cloud.password is None and not cloud.uses_login
    assert cloud.poll_interval == 5.0
    assert cloud.timeout == 5.0  # 10s, or the poll interval if shorter
    assert cloud.max_concurrency == 4
    assert cloud.max_requests_per_second is None
    assert cloud.signature_lifetime == 300.0
    assert cloud.page_size == 500
    assert cloud.verify_tls is True and cloud.ca_file is None
    assert cloud.jobs == () and cloud.jobs_file is None
    assert cloud.discovery == DiscoveryConfig(
        enabled=True,
        listall=True,
        account=None,
        domain_id=None,
        include=(),
        exclude=(),
        include_internal=False,
    )


def test_every_key_is_read(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    config = load(
        tmp_path,
        """\
        poll_interval: 30s
        state_file: state.json
        retention: 2h
        max_tracked_jobs: 50
        per_job_series: false
        duration_buckets: [0.5, 1m, 1h]
        clouds:
          - name: lab-1
            url: https://lab.example.com:8443/client/api/
            username: monitor
            password: pw-1234
            domain: /customers/acme
            poll_interval: 1m
            jobs: [6f3b0c7e-0000-4000-8000-000000000001, 12345]
            jobs_file: jobs.txt
            discovery:
              enabled: true
              listall: false
              account: ops
              domain_id: 8e7a1c2e-0000-4000-8000-000000000002
              include: ['\\.vm\\.']
              exclude: [Destroy]
              include_internal: true
            verify_tls: true
            ca_file: ca.pem
            timeout: 20s
            max_concurrency: 2
            max_requests_per_second: 2.5
            signature_lifetime: 10m
            page_size: 100
        """,
    )
    assert config.poll_interval == 30.0
    assert config.state_file == str(tmp_path / "state.json")
    assert config.retention == 7200.0
    assert config.max_tracked_jobs == 50
    assert config.per_job_series is False
    assert config.duration_buckets == (0.5, 60.0, 3600.0)
    (cloud,) = config.clouds
    assert cloud.url == "https://lab.example.com:8443/client/api"
    assert cloud.uses_login and cloud.username == "monitor"
    assert cloud.password is not None and cloud.password.reveal() == "pw-1234"
    assert cloud.domain == "/customers/acme"
    assert cloud.poll_interval == 60.0
    assert cloud.jobs == ("6f3b0c7e-0000-4000-8000-000000000001", "12345")
    assert cloud.jobs_file == str(tmp_path / "jobs.txt")
    assert cloud.discovery.listall is False
    assert cloud.discovery.account == "ops"
    assert cloud.discovery.domain_id == "8e7a1c2e-0000-4000-8000-000000000002"
    assert cloud.discovery.include == ("\\.vm\\.",)
    assert cloud.discovery.exclude == ("Destroy",)
    assert cloud.discovery.include_internal is True
    assert cloud.ca_file == str(tmp_path / "ca.pem")
    assert cloud.timeout == 20.0
    assert cloud.max_concurrency == 2
    assert cloud.max_requests_per_second == 2.5
    assert cloud.signature_lifetime == 600.0
    assert cloud.page_size == 100


def test_cloud_poll_interval_defaults_to_the_top_level_one(tmp_path: Path) -> None:
    config = load(tmp_path, "poll_interval: 5s\n" + CLOUD)
    assert config.clouds[0].poll_interval == 5.0
    # The request timeout never exceeds the poll interval by default.
    assert config.clouds[0].timeout == 5.0


def test_example_file_is_valid_and_documents_every_key() -> None:
    environ = {
        "CLOUDSTACK_API_KEY": "example-api-key",
        "CLOUDSTACK_SECRET_KEY": "example-secret-key",
        "CLOUDSTACK_LAB_PASSWORD": "example-password",
    }
    config = load_config(str(EXAMPLE), environ=environ)
    assert [c.name for c in config.clouds] == ["prod", "lab"]
    assert config.clouds[1].uses_login
    text = EXAMPLE.read_text(encoding="utf-8")
    keys = {
        *config_module._TOP_KEYS,
        *config_module._CLOUD_KEYS,
        *config_module._DISCOVERY_KEYS,
    }
    undocumented = [k for k in keys if not re.search(rf"^\s*#?\s*-?\s*{k}:", text, re.M)]
    assert undocumented == []


def test_example_file_without_its_variables_names_each_one() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(str(EXAMPLE), environ={})
    assert caught.value.problems == [
        "clouds[0].api_key: environment variable CLOUDSTACK_API_KEY is not set",
        "clouds[0].secret_key: environment variable CLOUDSTACK_SECRET_KEY is not set",
        "clouds[1].password: environment variable CLOUDSTACK_LAB_PASSWORD is not set",
    ]


def test_config_objects_are_frozen(tmp_path: Path) -> None:
    config = load(tmp_path, CLOUD)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.clouds[0].url = "https://elsewhere/client/api"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.poll_interval = 1  # type: ignore[misc]


# --------------------------------------------------------------------------- many problems


def test_every_problem_is_reported_at_once_with_its_key_path(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        f"""\
        poll_interval: fast
        retention: -5
        max_tracked_jobs: 0
        per_job_series: maybe
        duration_buckets: [1, 5, 5]
        clouds:
          - name: prod
            url: https://cloud.example.com/client/api
            api_key: {API_KEY}
            secret_key: {SECRET}
          - name: prod
            url: cloud.example.com
            api_key: {API_KEY}
            discovery:
              listal: true
            page_size: 1000
        """,
    )
    assert found == [
        "poll_interval: not a duration: 'fast' "
        "(use e.g. 500ms, 15s, 5m, 1h30m, or a number of seconds)",
        "retention: must be a positive duration",
        "max_tracked_jobs: must be at least 1, got 0",
        "per_job_series: must be true or false, not a string",
        "duration_buckets[2]: buckets must be strictly increasing (5 follows 5)",
        "clouds[1].name: 'prod' is already the name of clouds[0]; names must be unique",
        "clouds[1].url: must be an http(s) URL with a host "
        "(e.g. https://cloud.example.com/client/api)",
        "clouds[1].discovery.listal: unknown key (did you mean listall?)",
        "clouds[1].page_size: must be at most 500, got 1000",
        # An absent key's problem comes at the end of its mapping.
        "clouds[1].secret_key: is required with api_key (or secret_key_file)",
    ]


def test_duplicate_cloud_names_are_refused(tmp_path: Path) -> None:
    text = CLOUD + CLOUD.replace("clouds:\n", "")
    assert problems(tmp_path, text) == [
        "clouds[1].name: 'prod' is already the name of clouds[0]; names must be unique"
    ]


def test_a_duplicate_name_is_said_beside_the_clouds_other_problems(tmp_path: Path) -> None:
    broken = CLOUD.replace("clouds:\n", "").replace("https://", "ftp://")
    found = problems(tmp_path, CLOUD.replace("https://", "ftp://") + broken)
    assert "clouds[1].name: 'prod' is already the name of clouds[0]; names must be unique" in found
    assert (
        sum(
            p.endswith(
                ".url: must be an http(s) URL with a host "
                "(e.g. https://cloud.example.com/client/api)"
            )
            for p in found
        )
        == 2
    )


# --------------------------------------------------------------------------- file level


def test_yaml_syntax_error_is_one_line_with_position(tmp_path: Path) -> None:
    path = write(tmp_path, "clouds:\n  - name: prod\n    url: [unclosed\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), environ={})
    (line,) = caught.value.problems
    assert line.startswith(f"{path}:4:1: ")
    assert "\n" not in line


def test_tab_indentation_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "clouds:\n\t- name: prod\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), environ={})
    (line,) = caught.value.problems
    assert line.startswith(f"{path}:2:1: found character '\\t' that cannot start any token")


def test_duplicate_keys_are_errors_not_silently_merged(tmp_path: Path) -> None:
    path = write(tmp_path, CLOUD + "    url: https://other.example.com/client/api\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), environ={})
    assert caught.value.problems == [f"{path}:6:5: duplicate key 'url'"]


def test_yaml_merge_keys_may_override(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        f"""\
        clouds:
          - &base
            name: a
            url: https://a.example.com/client/api
            api_key: {API_KEY}
            secret_key: {SECRET}
          - <<: *base
            name: b
        """,
    )
    assert [c.name for c in config.clouds] == ["a", "b"]
    assert config.clouds[1].url == "https://a.example.com/client/api"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "the file is empty; it needs at least a `clouds` list"),
        ("# only a comment\n", "the file is empty; it needs at least a `clouds` list"),
        ("- a\n- b\n", "the top level must be a mapping of keys, not a list"),
        ("just text\n", "the top level must be a mapping of keys, not a string"),
    ],
)
def test_empty_or_non_mapping_file(tmp_path: Path, content: str, problem: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), environ={})
    assert caught.value.problems == [f"{path}: {problem}"]


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(str(missing))
    assert caught.value.problems == [f"{missing}: cannot read: No such file or directory"]
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"clouds: \xff\xfe\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(binary))
    assert caught.value.problems == [f"{binary}: not UTF-8 text"]


def test_python_tags_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "clouds: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    (line,) = caught.value.problems
    assert line.startswith(f"{path}:1:9: ")


@pytest.mark.parametrize(
    "text",
    [
        "clouds: &loop [*loop]\n",
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, "
                  f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
                  for i in range(8)),
    ],
    ids=["recursive", "billion-laughs"],
)  # fmt: skip
def test_recursive_or_exploding_aliases_are_refused(tmp_path: Path, text: str) -> None:
    assert problems(tmp_path, text) == [
        "(top level): more than 100000 values or 20 levels deep (a recursive YAML alias?)"
    ]


def test_parse_config_rejects_a_non_mapping_document() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config([1, 2], environ={})
    assert caught.value.problems == ["(top level): must be a mapping of keys, not a list"]


# --------------------------------------------------------------------------- unknown keys


def test_unknown_keys_at_every_level_with_suggestions(tmp_path: Path) -> None:
    text = "pol_interval: 5s\nzzz: 1\n" + cloud_with(
        """\
        secretkey_file: x
        discovery:
          listal: true
        """
    )
    assert problems(tmp_path, text) == [
        "pol_interval: unknown key (did you mean poll_interval?)",
        "zzz: unknown key",
        "clouds[0].secretkey_file: unknown key (did you mean secret_key_file?)",
        "clouds[0].discovery.listal: unknown key (did you mean listall?)",
    ]


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("15s", 15.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1w", 604800.0),
        ("1h30m", 5400.0),
        ("1m500ms", 60.5),
        ("0s", 0.0),
        (90, 90.0),
        (2.5, 2.5),
        ("20", 20.0),
        ("0.25", 0.25),
        (" 15s ", 15.0),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value", ["5 minutes", "1.5h", "m", "", "30m1h", "15S", "-5s", True, None, [1], float("inf")]
)
def test_parse_duration_refuses(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ("poll_interval: 500ms", "clouds[0].poll_interval: must be at least 1s"),
        ("poll_interval: 0", "clouds[0].poll_interval: must be a positive duration"),
        ("timeout: -1", "clouds[0].timeout: must be a positive duration"),
        ("timeout: 20s", "clouds[0].timeout: 20s is longer than the poll interval (5s)"),
        ("signature_lifetime: 16m", "clouds[0].signature_lifetime: must be at most 15m"),
        ("timeout: [1]", "clouds[0].timeout: must be a duration such as 15s, not a list"),
    ],
)
def test_duration_rules(tmp_path: Path, extra: str, problem: str) -> None:
    assert problems(tmp_path, cloud_with(extra)) == [problem]


def test_top_level_poll_interval_minimum(tmp_path: Path) -> None:
    assert problems(tmp_path, "poll_interval: 100ms\n" + CLOUD) == [
        "poll_interval: must be at least 1s"
    ]


@pytest.mark.parametrize(
    ("buckets", "problem"),
    [
        ("[]", "duration_buckets: must list at least one bucket"),
        ("5", "duration_buckets: must be a list, not a number"),
        ("[0, 1]", "duration_buckets[0]: must be positive"),
        ("[1, 10, 2]", "duration_buckets[2]: buckets must be strictly increasing (2 follows 10)"),
        ("[1m, 30s]", "duration_buckets[1]: buckets must be strictly increasing (30 follows 60)"),
        ("[1, soon]", "duration_buckets[1]: not a duration: 'soon' "
         "(use e.g. 500ms, 15s, 5m, 1h30m, or a number of seconds)"),
    ],
)  # fmt: skip
def test_bucket_rules(tmp_path: Path, buckets: str, problem: str) -> None:
    assert problems(tmp_path, f"duration_buckets: {buckets}\n" + CLOUD) == [problem]


# --------------------------------------------------------------------------- url and name


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://cloud.example.com/client/api", "must be an http(s) URL with a host"),
        ("https:///client/api", "must be an http(s) URL with a host"),
        ("cloud.example.com/client/api", "must be an http(s) URL with a host"),
        ("https://cloud.example.com", "must end in /client/api"),
        ("https://cloud.example.com/client/api?x=1", "must not have a query string"),
        ("https://cloud.example.com:99999/client/api", "is not a valid URL"),
        ("''", "must not be empty"),
        ("42", "must be an http(s) URL with a host"),
    ],
)
def test_url_rules(tmp_path: Path, url: str, problem: str) -> None:
    text = CLOUD.replace("https://cloud.example.com/client/api", url)
    (line,) = problems(tmp_path, text)
    assert line.startswith(f"clouds[0].url: {problem}")


def test_url_with_credentials_is_refused_without_echoing_them(tmp_path: Path) -> None:
    text = CLOUD.replace("https://", "https://admin:hunter2-pw@")
    (line,) = problems(tmp_path, text)
    assert line == (
        "clouds[0].url: must not contain user:password@; set username and password instead"
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5:8080/client/api",
        "HTTPS://cloud.example.com/client/api",
        "https://proxy.example.com/cloudstack/client/api",
        "https://[2001:db8::1]:8443/client/api",
    ],
)
def test_good_urls(tmp_path: Path, url: str) -> None:
    config = load(tmp_path, CLOUD.replace("https://cloud.example.com/client/api", url))
    assert config.clouds[0].url == url


@pytest.mark.parametrize("name", ["prod cloud", "-prod", "pröd", "a" * 65, "x{y}"])
def test_names_must_be_label_safe(tmp_path: Path, name: str) -> None:
    (line,) = problems(tmp_path, CLOUD.replace("name: prod", f"name: '{name}'"))
    assert line.startswith("clouds[0].name: ")
    assert "is not a valid name" in line


def test_name_and_url_are_required(tmp_path: Path) -> None:
    text = f"clouds:\n  - api_key: {API_KEY}\n    secret_key: {SECRET}\n"
    assert problems(tmp_path, text) == ["clouds[0].name: is required", "clouds[0].url: is required"]


@pytest.mark.parametrize(
    ("clouds", "problem"),
    [
        ("", "clouds: is required: list at least one CloudStack endpoint"),
        ("clouds: []", "clouds: must list at least one CloudStack endpoint"),
        ("clouds: prod", "clouds: must be a list, not a string"),
        ("clouds: [prod]", "clouds[0]: must be a mapping of keys, not a string"),
    ],
)
def test_clouds_shape(tmp_path: Path, clouds: str, problem: str) -> None:
    assert problems(tmp_path, "poll_interval: 15s\n" + clouds + "\n") == [problem]


# --------------------------------------------------------------------------- credentials


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ([], "clouds[0]: no credentials: set api_key and secret_key (or their _file variants), "
         "or username and password"),
        ([f"api_key: {API_KEY}"], "clouds[0].secret_key: is required with api_key "
         "(or secret_key_file)"),
        ([f"secret_key: {SECRET}"], "clouds[0].api_key: is required with secret_key "
         "(or api_key_file)"),
        (["username: admin"], "clouds[0].password: is required with username (or password_file)"),
        ([f"password: {SECRET}"], "clouds[0].username: is required with password"),
        ([f"api_key: {API_KEY}", f"secret_key: {SECRET}", "username: admin",
          f"password: {SECRET}"],
         "clouds[0]: set either api_key and secret_key, or username and password, not both"),
        ([f"api_key: {API_KEY}", f"secret_key: {SECRET}", "domain: /"],
         "clouds[0].domain: is only used with username/password login"),
        ([f"api_key: {API_KEY}", f"secret_key: {SECRET}", "domain_id: d-1"],
         "clouds[0].domain_id: is the login domain of username/password login; to list one "
         "domain's jobs, set discovery.domain_id"),
        (["username: admin", f"password: {SECRET}", "domain: /", "domain_id: d-1"],
         "clouds[0].domain_id: give either domain or domain_id, not both"),
        ([f"api_key: {API_KEY}", "secret_key: 12345"],
         "clouds[0].secret_key: must be a string, not a number (quote it)"),
        ([f"api_key: {API_KEY}", "secret_key: ''"], "clouds[0].secret_key: must not be empty"),
    ],
)  # fmt: skip
def test_credential_rules(tmp_path: Path, lines: list[str], problem: str) -> None:
    text = cloud_with("\n".join(lines), credentials=False)
    found = problems(tmp_path, text)
    assert found == [problem]
    assert "12345" not in "\n".join(found)


def test_secret_files_are_read_without_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "key").write_text(API_KEY + "\n")
    (tmp_path / "secrets" / "secret").write_text(SECRET + "\r\n")
    config = load(
        tmp_path,
        cloud_with(
            """\
            api_key_file: secrets/key
            secret_key_file: ${SECRETS}/secret
            """,
            credentials=False,
        ),
        environ={"SECRETS": str(tmp_path / "secrets")},
    )
    cloud = config.clouds[0]
    assert cloud.api_key is not None and cloud.api_key.reveal() == API_KEY
    assert cloud.secret_key is not None and cloud.secret_key.reveal() == SECRET


def test_password_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("with spaces kept  \n\n")
    config = load(tmp_path, cloud_with("username: admin\npassword_file: pw\n", credentials=False))
    assert config.clouds[0].password is not None
    assert config.clouds[0].password.reveal() == "with spaces kept  "


def test_secret_file_problems(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "binary").write_bytes(b"\xff\xfe")
    (tmp_path / "key").write_text(API_KEY)
    text = "clouds:\n" + "".join(
        f"  - name: c{i}\n    url: https://c.example.com/client/api\n{lines}"
        for i, lines in enumerate(
            [
                "    api_key_file: missing\n    secret_key: x\n",
                "    api_key_file: empty\n    secret_key: x\n",
                "    api_key_file: binary\n    secret_key: x\n",
                f"    api_key: {API_KEY}\n    api_key_file: key\n    secret_key: x\n",
            ]
        )
    )
    assert problems(tmp_path, text) == [
        f"clouds[0].api_key_file: cannot read {tmp_path / 'missing'}: No such file or directory",
        f"clouds[1].api_key_file: {tmp_path / 'empty'} is empty",
        f"clouds[2].api_key_file: {tmp_path / 'binary'} is not UTF-8 text",
        "clouds[3].api_key_file: set api_key or api_key_file, not both",
    ]


# --------------------------------------------------------------------------- environment


def test_environment_variables_are_expanded(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        poll_interval: ${POLL}
        per_job_series: ${PER_JOB}
        clouds:
          - name: ${ENV}-cloud
            url: https://${HOST}:${PORT}/client/api
            api_key: ${KEY}
            secret_key: ${SECRET}
            max_concurrency: ${CONCURRENCY}
            max_requests_per_second: ${RATE}
            discovery:
              include: ['$${literal}', '${PATTERN}']
        """,
        environ={
            "POLL": "30s",
            "PER_JOB": "false",
            "ENV": "staging",
            "HOST": "cs.example.com",
            "PORT": "8443",
            "KEY": API_KEY,
            "SECRET": SECRET,
            "CONCURRENCY": "8",
            "RATE": "12.5",
            "PATTERN": "StartVM",
        },
    )
    cloud = config.clouds[0]
    assert config.poll_interval == 30.0
    assert config.per_job_series is False
    assert cloud.name == "staging-cloud"
    assert cloud.url == "https://cs.example.com:8443/client/api"
    assert cloud.secret_key is not None and cloud.secret_key.reveal() == SECRET
    assert cloud.max_concurrency == 8
    assert cloud.max_requests_per_second == 12.5
    assert cloud.discovery.include == ("${literal}", "StartVM")


def test_environment_problems_name_key_and_variable_not_values(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        state_file: ${STATE_DIR}/state.json
        clouds:
          - name: prod
            url: https://cloud.example.com/client/api
            api_key: ${SET}
            secret_key: ${MISSING_SECRET}
            jobs: ['${1BAD}', '${UNTERMINATED']
        """,
        environ={"SET": API_KEY, "OTHER": SECRET},
    )
    assert found == [
        "state_file: environment variable STATE_DIR is not set",
        "clouds[0].secret_key: environment variable MISSING_SECRET is not set",
        "clouds[0].jobs[0]: invalid variable reference ${1BAD}",
        "clouds[0].jobs[1]: unterminated ${ (write $${ for a literal ${)",
    ]


def test_environment_defaults_to_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CJE_TEST_SECRET", SECRET)
    path = write(tmp_path, CLOUD.replace(SECRET, "${CJE_TEST_SECRET}"))
    config = load_config(str(path))
    assert config.clouds[0].secret_key is not None
    assert config.clouds[0].secret_key.reveal() == SECRET


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ("max_concurrency: 0", "clouds[0].max_concurrency: must be at least 1, got 0"),
        ("max_concurrency: two", "clouds[0].max_concurrency: must be a whole number, not a string"),
        ("max_concurrency: 1.5", "clouds[0].max_concurrency: must be a whole number, not a number"),
        ("max_concurrency: true", "clouds[0].max_concurrency: must be a whole number, "
         "not a boolean"),
        ("page_size: 0", "clouds[0].page_size: must be at least 1, got 0"),
        ("max_requests_per_second: 0", "clouds[0].max_requests_per_second: must be a positive "
         "number, got 0"),
        ("max_requests_per_second: fast", "clouds[0].max_requests_per_second: must be a number, "
         "not a string"),
        ("verify_tls: 1", "clouds[0].verify_tls: must be true or false, not a number"),
    ],
)  # fmt: skip
def test_number_rules(tmp_path: Path, extra: str, problem: str) -> None:
    assert problems(tmp_path, cloud_with(extra)) == [problem]


# --------------------------------------------------------------------------- jobs, discovery


def test_jobs_rules(tmp_path: Path) -> None:
    found = problems(tmp_path, cloud_with("jobs: [ok-1, 'has space', [x], '']"))
    assert found == [
        "clouds[0].jobs[1]: 'has space' is not a job ID "
        "(a UUID such as 6f3b0c7e-0000-4000-8000-000000000001)",
        "clouds[0].jobs[2]: must be a string, not a list",
        "clouds[0].jobs[3]: '' is not a job ID "
        "(a UUID such as 6f3b0c7e-0000-4000-8000-000000000001)",
    ]
    assert problems(tmp_path, cloud_with("jobs: abc")) == [
        "clouds[0].jobs: must be a list, not a string"
    ]


@pytest.mark.parametrize(
    "job_id",
    ["6f3b0c7e-0000-4000-8000-000000000001", "old.server_7", "a" * 128, "a" * 129, "-x", "a b"],
)
def test_jobs_and_a_jobs_file_take_the_same_ids(tmp_path: Path, job_id: str) -> None:
    """One job-ID rule (exporter.jobs) for the config's `jobs` and the lines of a jobs_file."""
    from exporter.sources import parse_id_lines

    in_file = parse_id_lines([job_id])[0] == [job_id]
    try:
        in_config = load(tmp_path, cloud_with(f"jobs: ['{job_id}']")).clouds[0].jobs == (job_id,)
    except ConfigError:
        in_config = False
    assert in_config == in_file


def test_secrets_are_every_credential_of_every_cloud() -> None:
    config = Config(
        clouds=(
            CloudConfig(name="a", url="https://a/client/api", api_key=Secret("key-a"),
                        secret_key=Secret("secret-a")),
            CloudConfig(name="b", url="https://b/client/api", username="monitor",
                        password=Secret("password-b"),
                        events=EventsConfig(url="amqp://b/", password=Secret("amqp-b"))),
        )
    )  # fmt: skip
    assert sorted(s.reveal() for s in config.secrets()) == [
        "amqp-b",
        "key-a",
        "password-b",
        "secret-a",
    ]
    assert Config().secrets() == []


def test_duplicate_job_ids_are_tracked_once(tmp_path: Path) -> None:
    config = load(tmp_path, cloud_with("jobs: [a-1, b-2, a-1]"))
    assert config.clouds[0].jobs == ("a-1", "b-2")


def test_discovery_rules(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        cloud_with(
            """\
            discovery:
              account: ops
              include: ['(unclosed']
              exclude: ok
            """
        ),
    )
    assert found == [
        "clouds[0].discovery.include[0]: invalid regular expression: "
        "missing ), unterminated subpattern at position 0",
        "clouds[0].discovery.exclude: must be a list, not a string",
        "clouds[0].discovery.domain_id: is required with account "
        "(an account name is unique only within a domain)",
    ]
    assert problems(tmp_path, cloud_with("discovery: [x]")) == [
        "clouds[0].discovery: must be a mapping of keys, not a list"
    ]


def test_discovery_domain_alone_is_allowed(tmp_path: Path) -> None:
    config = load(tmp_path, cloud_with("discovery:\n  domain_id: d-1\n"))
    assert config.clouds[0].discovery.domain_id == "d-1"


def test_a_cloud_with_nothing_to_track_is_refused(tmp_path: Path) -> None:
    assert problems(tmp_path, cloud_with("discovery:\n  enabled: false\n")) == [
        "clouds[0]: nothing to track: discovery is disabled and neither jobs nor jobs_file is set"
    ]
    config = load(tmp_path, cloud_with("discovery:\n  enabled: false\njobs_file: ids.txt\n"))
    assert config.clouds[0].discovery.enabled is False


# --------------------------------------------------------------------------- TLS


def test_ca_file_rules(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    config = load(tmp_path, cloud_with("ca_file: ca.pem"))
    assert config.clouds[0].ca_file == str(tmp_path / "ca.pem")

    http = cloud_with("ca_file: ca.pem").replace("https://", "http://")
    assert problems(tmp_path, http) == ["clouds[0].ca_file: is only used with an https URL"]
    assert problems(tmp_path, cloud_with("ca_file: ca.pem\nverify_tls: false")) == [
        "clouds[0].ca_file: has no effect with verify_tls: false"
    ]
    assert problems(tmp_path, cloud_with("ca_file: junk.pem")) == [
        f"clouds[0].ca_file: {tmp_path / 'junk.pem'} holds no usable PEM certificate"
    ]
    assert problems(tmp_path, cloud_with("ca_file: gone.pem")) == [
        f"clouds[0].ca_file: cannot read {tmp_path / 'gone.pem'}: No such file or directory"
    ]


# --------------------------------------------------------------------------- secrets


def test_secret_hides_its_value() -> None:
    secret = Secret(SECRET)
    assert secret.reveal() == SECRET
    assert type(secret.reveal()) is str
    # "%s" is how logging formats its arguments.
    for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}", "%s" % secret):  # noqa: UP031
        assert SECRET not in shown
        assert "***" in shown
    assert secret == SECRET  # still compares as the string it holds


def test_config_repr_never_shows_secrets(tmp_path: Path) -> None:
    config = load(tmp_path, CLOUD)
    login = load(tmp_path, cloud_with(f"username: admin\npassword: {SECRET}", credentials=False))
    for shown in (repr(config), str(config), repr(login), str(login.clouds[0])):
        assert SECRET not in shown and API_KEY not in shown
    assert "secret_key='***'" in repr(config)


def test_secrets_never_appear_in_problems(tmp_path: Path) -> None:
    # A secret in a wrong place (a number-typed key, a bad URL) is still not echoed.
    secret_file = tmp_path / "s"
    secret_file.write_text(SECRET)
    found = problems(
        tmp_path,
        f"""\
        clouds:
          - name: prod
            url: https://user:{SECRET}@cloud.example.com/client/api
            api_key: {API_KEY}
            secret_key: {SECRET}
            secret_key_file: s
            password: [{SECRET}]
        """,
    )
    assert len(found) == 4


def test_cloud_config_can_be_built_directly() -> None:
    # Other modules' tests build configs in code; the defaults match the loader's.
    cloud = CloudConfig(name="x", url="http://127.0.0.1:1/client/api")
    assert cloud.timeout == 10.0 and cloud.discovery == DiscoveryConfig()
    assert Config(clouds=(cloud,)).duration_buckets == DEFAULT_DURATION_BUCKETS
