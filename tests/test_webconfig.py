"""The web config file over real HTTPS: TLS versions, client certificates, basic auth, reloads."""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import trustme
import yaml
from aiohttp import web

from exporter import webconfig
from exporter.web import bound_ports, make_app, start_server
from exporter.webconfig import (
    WebConfigError,
    WebConfigHolder,
    load_web_config,
    parse_go_duration,
    parse_web_config,
)

BODY = b"up 1\n"
GZIPPED = gzip.compress(BODY)


class Source:
    def body(self, openmetrics: bool, gzip: bool) -> bytes:
        return GZIPPED if gzip else BODY


def bcrypt_hash(password: str) -> str:
    # Cost 4 keeps the suite quick; the server handles any cost the same way.
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def client_ca() -> trustme.CA:
    return trustme.CA(organization_name="client CA")


@pytest.fixture
def tls_files(tmp_path: Path, ca: trustme.CA, client_ca: trustme.CA) -> dict[str, Path]:
    server = ca.issue_cert("127.0.0.1", "localhost")
    files = {
        "cert": tmp_path / "server.crt",
        "key": tmp_path / "server.key",
        "client_ca": tmp_path / "client-ca.crt",
    }
    server.cert_chain_pems[0].write_to_path(str(files["cert"]))
    server.private_key_pem.write_to_path(str(files["key"]))
    client_ca.cert_pem.write_to_path(str(files["client_ca"]))
    return files


def write(path: Path, data: dict[str, Any] | str) -> Path:
    text = data if isinstance(data, str) else yaml.safe_dump(data)
    # Write then rename, like editors and config management do.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def client_context(
    ca: trustme.CA,
    *,
    cert: trustme.LeafCert | None = None,
    max_version: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    if cert is not None:
        cert.configure_cert(ctx)
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


Serve = Callable[[Path], Awaitable[tuple[str, WebConfigHolder]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []

    async def start(config_path: Path) -> tuple[str, WebConfigHolder]:
        # check_interval 0: look at the files on every request, so tests need no sleeping.
        holder = WebConfigHolder(str(config_path), check_interval=0)
        app = make_app(Source(), lambda: True, web_config=holder)
        runner = await start_server(app, "127.0.0.1:0", holder)
        runners.append(runner)
        scheme = "https" if holder.tls_enabled else "http"
        return f"{scheme}://127.0.0.1:{bound_ports(runner)[0]}", holder

    yield start
    for runner in runners:
        await runner.cleanup()


async def fetch(
    url: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    auth: tuple[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection (so every request goes through a TLS handshake)."""
    headers = {"Authorization": aiohttp.encode_basic_auth(*auth)} if auth else None
    connector = aiohttp.TCPConnector(ssl=ssl_context if ssl_context is not None else True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(url, headers=headers) as response,
    ):
        return response.status, dict(response.headers), await response.read()


async def peer_certificate(port: int, ctx: ssl.SSLContext) -> dict[str, Any]:
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        cert: dict[str, Any] = writer.get_extra_info("peercert")
        return cert
    finally:
        writer.close()


def sans(cert: dict[str, Any]) -> set[str]:
    return {value for _, value in cert["subjectAltName"]}


# --------------------------------------------------------------------------- TLS

TLS_REFUSED = (aiohttp.ClientError, ssl.SSLError, ConnectionError)


async def test_tls_serves_the_configured_certificate(
    tmp_path: Path, tls_files: dict[str, Path], ca: trustme.CA, serve: Serve
) -> None:
    config = write(
        tmp_path / "web.yml",
        {"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"}},
    )  # relative paths: next to the config file, as in the exporter toolkit
    url, _ = await serve(config)
    assert url.startswith("https://")
    status, _, body = await fetch(url + "/metrics", ssl_context=client_context(ca))
    assert (status, body) == (200, BODY)
    with pytest.raises(TLS_REFUSED):
        await fetch(url.replace("https", "http") + "/metrics")


async def test_min_version_is_honoured(
    tmp_path: Path, tls_files: dict[str, Path], ca: trustme.CA, serve: Serve
) -> None:
    tls12_client = client_context(ca, max_version=ssl.TLSVersion.TLSv1_2)
    base = {"cert_file": str(tls_files["cert"]), "key_file": str(tls_files["key"])}

    # The default minimum (TLS 1.2) lets this client in...
    url, _ = await serve(write(tmp_path / "default.yml", {"tls_server_config": base}))
    assert (await fetch(url + "/metrics", ssl_context=tls12_client))[0] == 200

    # ...and min_version TLS13 keeps it out while a TLS 1.3 client gets through.
    strict = {"tls_server_config": {**base, "min_version": "TLS13"}}
    url, _ = await serve(write(tmp_path / "strict.yml", strict))
    with pytest.raises(TLS_REFUSED):
        await fetch(url + "/metrics", ssl_context=tls12_client)
    _, writer = await asyncio.open_connection(
        "127.0.0.1", int(url.rsplit(":", 1)[1]), ssl=client_context(ca)
    )
    assert writer.get_extra_info("ssl_object").version() == "TLSv1.3"
    writer.close()


async def test_max_version_is_honoured(
    tmp_path: Path, tls_files: dict[str, Path], ca: trustme.CA, serve: Serve
) -> None:
    tls = {
        "cert_file": str(tls_files["cert"]),
        "key_file": str(tls_files["key"]),
        "max_version": "TLS12",
    }
    url, _ = await serve(write(tmp_path / "web.yml", {"tls_server_config": tls}))
    _, writer = await asyncio.open_connection(
        "127.0.0.1", int(url.rsplit(":", 1)[1]), ssl=client_context(ca)
    )
    assert writer.get_extra_info("ssl_object").version() == "TLSv1.2"
    writer.close()


async def test_mutual_tls_requires_a_verified_client_certificate(
    tmp_path: Path,
    tls_files: dict[str, Path],
    ca: trustme.CA,
    client_ca: trustme.CA,
    serve: Serve,
) -> None:
    tls = {
        "cert_file": str(tls_files["cert"]),
        "key_file": str(tls_files["key"]),
        "client_auth_type": "RequireAndVerifyClientCert",
        "client_ca_file": str(tls_files["client_ca"]),
    }
    url, _ = await serve(write(tmp_path / "web.yml", {"tls_server_config": tls}))
    good = client_ca.issue_cert("prometheus.example.org")
    stranger = ca.issue_cert("prometheus.example.org")  # a certificate from another CA

    status, _, body = await fetch(url + "/metrics", ssl_context=client_context(ca, cert=good))
    assert (status, body) == (200, BODY)
    with pytest.raises(TLS_REFUSED):
        await fetch(url + "/metrics", ssl_context=client_context(ca))
    with pytest.raises(TLS_REFUSED):
        await fetch(url + "/metrics", ssl_context=client_context(ca, cert=stranger))


async def test_client_allowed_sans(
    tmp_path: Path,
    tls_files: dict[str, Path],
    ca: trustme.CA,
    client_ca: trustme.CA,
    serve: Serve,
) -> None:
    tls = {
        "cert_file": str(tls_files["cert"]),
        "key_file": str(tls_files["key"]),
        "client_auth_type": "RequireAndVerifyClientCert",
        "client_ca_file": str(tls_files["client_ca"]),
        "client_allowed_sans": ["prometheus.example.org", "10.0.0.7"],
    }
    url, _ = await serve(write(tmp_path / "web.yml", {"tls_server_config": tls}))
    by_name = client_ca.issue_cert("prometheus.example.org")
    by_ip = client_ca.issue_cert("10.0.0.7")
    other = client_ca.issue_cert("grafana.example.org")
    for cert in (by_name, by_ip):
        assert (await fetch(url + "/metrics", ssl_context=client_context(ca, cert=cert)))[0] == 200
    status, _, _ = await fetch(url + "/metrics", ssl_context=client_context(ca, cert=other))
    assert status == 403


async def test_inline_certificate_and_key(tmp_path: Path, ca: trustme.CA, serve: Serve) -> None:
    server = ca.issue_cert("127.0.0.1")
    tls = {
        "cert": server.cert_chain_pems[0].bytes().decode(),
        "key": server.private_key_pem.bytes().decode(),
    }
    url, holder = await serve(write(tmp_path / "web.yml", {"tls_server_config": tls}))
    assert (await fetch(url + "/metrics", ssl_context=client_context(ca)))[0] == 200
    assert "PRIVATE KEY" not in repr(holder.config)


async def test_new_certificate_files_are_used_by_new_connections(
    tmp_path: Path, tls_files: dict[str, Path], ca: trustme.CA, serve: Serve
) -> None:
    tls = {"cert_file": str(tls_files["cert"]), "key_file": str(tls_files["key"])}
    url, _ = await serve(write(tmp_path / "web.yml", {"tls_server_config": tls}))
    port = int(url.rsplit(":", 1)[1])
    ctx = client_context(ca)
    assert sans(await peer_certificate(port, ctx)) == {"127.0.0.1", "localhost"}

    renewed = ca.issue_cert("127.0.0.1", "renewed.example.org")
    renewed.private_key_pem.write_to_path(str(tls_files["key"]))
    renewed.cert_chain_pems[0].write_to_path(str(tls_files["cert"]))

    assert sans(await peer_certificate(port, ctx)) == {"127.0.0.1", "renewed.example.org"}
    assert (await fetch(url + "/metrics", ssl_context=ctx))[0] == 200


async def test_reload_can_require_client_certificates(
    tmp_path: Path,
    tls_files: dict[str, Path],
    ca: trustme.CA,
    client_ca: trustme.CA,
    serve: Serve,
) -> None:
    tls: dict[str, Any] = {"cert_file": str(tls_files["cert"]), "key_file": str(tls_files["key"])}
    path = write(tmp_path / "web.yml", {"tls_server_config": tls})
    url, _ = await serve(path)
    assert (await fetch(url + "/metrics", ssl_context=client_context(ca)))[0] == 200

    tls["client_auth_type"] = "RequireAndVerifyClientCert"
    tls["client_ca_file"] = str(tls_files["client_ca"])
    write(path, {"tls_server_config": tls})
    with pytest.raises(TLS_REFUSED):
        await fetch(url + "/metrics", ssl_context=client_context(ca))
    cert = client_ca.issue_cert("prometheus.example.org")
    assert (await fetch(url + "/metrics", ssl_context=client_context(ca, cert=cert)))[0] == 200


async def test_tls_cannot_be_switched_off_by_a_reload(
    tmp_path: Path,
    tls_files: dict[str, Path],
    ca: trustme.CA,
    serve: Serve,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tls = {"cert_file": str(tls_files["cert"]), "key_file": str(tls_files["key"])}
    path = write(tmp_path / "web.yml", {"tls_server_config": tls})
    url, _ = await serve(path)
    write(path, {"basic_auth_users": {"alice": bcrypt_hash("pw")}})
    # Still TLS, and still without the new file's basic auth.
    assert (await fetch(url + "/metrics", ssl_context=client_context(ca)))[0] == 200
    assert any("needs a restart" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- basic auth


async def test_basic_auth(tmp_path: Path, serve: Serve) -> None:
    path = write(
        tmp_path / "web.yml",
        {"basic_auth_users": {"alice": bcrypt_hash("s3cret"), "bob": bcrypt_hash("hunter2")}},
    )
    url, _ = await serve(path)
    assert (await fetch(url + "/metrics", auth=("alice", "s3cret")))[:3:2] == (200, BODY)
    assert (await fetch(url + "/metrics", auth=("bob", "hunter2")))[0] == 200
    for auth in (("alice", "wrong"), ("alice", "hunter2"), ("mallory", "s3cret"), None):
        status, headers, body = await fetch(url + "/metrics", auth=auth)
        assert status == 401
        assert headers["WWW-Authenticate"].startswith('Basic realm="')
        assert BODY not in body


@pytest.mark.parametrize("path", ["/", "/-/healthy", "/-/ready", "/no-such-page"])
async def test_basic_auth_protects_every_path(tmp_path: Path, serve: Serve, path: str) -> None:
    url, _ = await serve(write(tmp_path / "web.yml", {"basic_auth_users": {"a": bcrypt_hash("b")}}))
    assert (await fetch(url + path))[0] == 401


@pytest.mark.parametrize(
    "header",
    ["Basic", "Basic !!!notbase64", "Bearer abc", "Basic YWxpY2U=", "Basic " + "A" * 2000],
)
async def test_malformed_authorization_is_401(tmp_path: Path, serve: Serve, header: str) -> None:
    url, _ = await serve(
        write(tmp_path / "web.yml", {"basic_auth_users": {"alice": bcrypt_hash("x")}})
    )
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + "/metrics", headers={"Authorization": header}) as response,
    ):
        assert response.status == 401


async def test_successful_checks_are_cached(
    tmp_path: Path, serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real_checkpw = bcrypt.checkpw

    def counting_checkpw(password: bytes, hashed: bytes) -> bool:
        calls.append(1)
        return real_checkpw(password, hashed)

    monkeypatch.setattr(webconfig.bcrypt, "checkpw", counting_checkpw)
    url, _ = await serve(
        write(tmp_path / "web.yml", {"basic_auth_users": {"alice": bcrypt_hash("pw")}})
    )
    for _ in range(3):
        assert (await fetch(url + "/metrics", auth=("alice", "pw")))[0] == 200
    assert len(calls) == 1
    # Failures are not cached: every wrong guess costs a full bcrypt check.
    for _ in range(2):
        assert (await fetch(url + "/metrics", auth=("alice", "nope")))[0] == 401
    assert len(calls) == 3


async def test_password_longer_than_72_bytes(tmp_path: Path, serve: Serve) -> None:
    long_password = "p" * 100
    hashed = bcrypt.hashpw(long_password.encode()[:72], bcrypt.gensalt(rounds=4)).decode()
    url, _ = await serve(write(tmp_path / "web.yml", {"basic_auth_users": {"alice": hashed}}))
    assert (await fetch(url + "/metrics", auth=("alice", long_password)))[0] == 200


async def test_password_change_takes_effect(
    tmp_path: Path, serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "web.yml", {"basic_auth_users": {"alice": bcrypt_hash("old")}})
    url, _ = await serve(path)
    assert (await fetch(url + "/metrics", auth=("alice", "old")))[0] == 200

    write(path, {"basic_auth_users": {"alice": bcrypt_hash("new")}})
    assert (await fetch(url + "/metrics", auth=("alice", "old")))[0] == 401
    assert (await fetch(url + "/metrics", auth=("alice", "new")))[0] == 200

    # A broken file is refused with a log line; the last good settings stay.
    caplog.set_level(logging.INFO)
    write(path, {"basic_auth_users": {"alice": bcrypt_hash("newer")}, "tls_sever_config": {}})
    assert (await fetch(url + "/metrics", auth=("alice", "new")))[0] == 200
    assert (await fetch(url + "/metrics", auth=("alice", "newer")))[0] == 401
    refused = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(refused) == 1  # once per bad version of the file, not once per request
    assert "tls_sever_config: unknown key" in refused[0].getMessage()
    assert "keeping the previous" in refused[0].getMessage()

    write(path, "basic_auth_users: {alice: [unclosed")
    assert (await fetch(url + "/metrics", auth=("alice", "new")))[0] == 200

    # Once fixed, the new file applies.
    write(path, {"basic_auth_users": {"alice": bcrypt_hash("newer")}})
    assert (await fetch(url + "/metrics", auth=("alice", "newer")))[0] == 200


async def test_deleted_file_keeps_the_settings(tmp_path: Path, serve: Serve) -> None:
    path = write(tmp_path / "web.yml", {"basic_auth_users": {"alice": bcrypt_hash("pw")}})
    url, _ = await serve(path)
    path.unlink()
    assert (await fetch(url + "/metrics"))[0] == 401
    assert (await fetch(url + "/metrics", auth=("alice", "pw")))[0] == 200


def test_changes_are_looked_for_at_most_once_per_interval(tmp_path: Path) -> None:
    now = [100.0]
    path = write(
        tmp_path / "web.yml", {"http_server_config": {"headers": {"X-Frame-Options": "deny"}}}
    )
    holder = WebConfigHolder(str(path), clock=lambda: now[0])
    write(path, {"http_server_config": {"headers": {"X-Frame-Options": "sameorigin"}}})
    now[0] += 0.5
    holder.maybe_reload()
    assert holder.headers == (("X-Frame-Options", "deny"),)
    now[0] += 0.6
    holder.maybe_reload()
    assert holder.headers == (("X-Frame-Options", "sameorigin"),)


# --------------------------------------------------------------------------- HTTP settings


async def test_extra_headers_on_every_answer(tmp_path: Path, serve: Serve) -> None:
    config = {
        "http_server_config": {
            "http2": True,
            "headers": {
                "X-Content-Type-Options": "nosniff",
                "X-Frame-Options": "deny",
                "Content-Security-Policy": "default-src 'none'",
            },
        },
        "basic_auth_users": {"alice": bcrypt_hash("pw")},
    }
    url, _ = await serve(write(tmp_path / "web.yml", config))
    for auth, expected in ((("alice", "pw"), 200), (None, 401)):
        status, headers, _ = await fetch(url + "/metrics", auth=auth)
        assert status == expected
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "deny"
        assert headers["Content-Security-Policy"] == "default-src 'none'"


async def test_rate_limit(tmp_path: Path, serve: Serve) -> None:
    config = {"rate_limit": {"interval": "1h", "burst": 2}}
    url, _ = await serve(write(tmp_path / "web.yml", config))
    assert [(await fetch(url + "/-/healthy"))[0] for _ in range(3)] == [200, 200, 429]


async def test_empty_file_changes_nothing(tmp_path: Path, serve: Serve) -> None:
    url, holder = await serve(write(tmp_path / "web.yml", ""))
    assert url.startswith("http://")
    assert not holder.auth_required
    assert (await fetch(url + "/metrics"))[0] == 200


# --------------------------------------------------------------------------- validation


def problems_of(tmp_path: Path, data: dict[str, Any] | str) -> list[str]:
    path = write(tmp_path / "web.yml", data)
    with pytest.raises(WebConfigError) as info:
        load_web_config(str(path))
    assert str(path) in str(info.value)
    return info.value.problems


def test_unknown_keys_are_errors(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        {
            "basic_auth_user": {},
            "tls_server_config": {"cert_file": "a", "key_file": "b", "min_versoin": "TLS13"},
            "http_server_config": {"header": {}},
        },
    )
    # The same words and hints as the exporter's own configuration file.
    assert "basic_auth_user: unknown key (did you mean basic_auth_users?)" in problems
    assert "tls_server_config.min_versoin: unknown key (did you mean min_version?)" in problems
    assert "http_server_config.header: unknown key (did you mean headers?)" in problems


@pytest.mark.parametrize("version", ["TLS14", "tls13", "1.3", "SSL3"])
def test_bad_tls_version(tmp_path: Path, tls_files: dict[str, Path], version: str) -> None:
    tls = {"cert_file": str(tls_files["cert"]), "key_file": str(tls_files["key"])}
    problems = problems_of(tmp_path, {"tls_server_config": {**tls, "min_version": version}})
    assert problems == [
        f"tls_server_config.min_version: unknown TLS version {version!r} "
        "(expected one of TLS10, TLS11, TLS12, TLS13)"
    ]


def test_min_above_max(tmp_path: Path, tls_files: dict[str, Path]) -> None:
    tls = {
        "cert_file": str(tls_files["cert"]),
        "key_file": str(tls_files["key"]),
        "min_version": "TLS13",
        "max_version": "TLS12",
    }
    assert problems_of(tmp_path, {"tls_server_config": tls}) == [
        "tls_server_config.min_version: is above max_version"
    ]


def test_missing_certificate_file(tmp_path: Path, tls_files: dict[str, Path]) -> None:
    missing = tmp_path / "nope.crt"
    tls = {"cert_file": str(missing), "key_file": str(tls_files["key"])}
    assert problems_of(tmp_path, {"tls_server_config": tls}) == [
        f"tls_server_config.cert_file: cannot read {missing}: no such file"
    ]


def test_certificate_and_key_that_do_not_match(
    tmp_path: Path, tls_files: dict[str, Path], ca: trustme.CA
) -> None:
    other_key = tmp_path / "other.key"
    ca.issue_cert("127.0.0.1").private_key_pem.write_to_path(str(other_key))
    tls = {"cert_file": str(tls_files["cert"]), "key_file": str(other_key)}
    (problem,) = problems_of(tmp_path, {"tls_server_config": tls})
    assert problem.startswith("tls_server_config: cannot load the certificate and key: ")


@pytest.mark.parametrize(
    ("tls", "expected"),
    [
        ({"cert_file": "a.crt"}, "tls_server_config: missing one of key or key_file"),
        ({"key_file": "a.key"}, "tls_server_config: missing one of cert or cert_file"),
        (
            {"cert_file": "a", "key_file": "b", "client_auth_type": "Sometimes"},
            "tls_server_config.client_auth_type: unknown value 'Sometimes'",
        ),
        (
            {"cert_file": "a", "key_file": "b", "client_ca_file": "ca.crt"},
            "tls_server_config: client CAs are configured but client_auth_type is NoClientCert",
        ),
        (
            {"cert_file": "a", "key_file": "b", "client_auth_type": "RequireAndVerifyClientCert"},
            "tls_server_config.client_ca_file: required for client_auth_type",
        ),
        (
            {"cert_file": "a", "key_file": "b", "client_allowed_sans": ["x"]},
            "tls_server_config.client_allowed_sans: requires client_auth_type",
        ),
        (
            {"cert_file": "a", "key_file": "b", "cipher_suites": ["TLS_FANCY"]},
            "tls_server_config.cipher_suites: unknown cipher suite 'TLS_FANCY'",
        ),
        (
            {"cert_file": "a", "key_file": "b", "curve_preferences": ["P-256"]},
            "tls_server_config.curve_preferences: unknown curve 'P-256'",
        ),
        (
            {"cert_file": 5, "key_file": "b"},
            "tls_server_config.cert_file: must be a string, not a number",
        ),
    ],
)
def test_invalid_tls_settings(tmp_path: Path, tls: dict[str, Any], expected: str) -> None:
    problems = problems_of(tmp_path, {"tls_server_config": tls})
    assert any(p.startswith(expected) for p in problems), problems


def test_cipher_suites_are_mapped(tmp_path: Path, tls_files: dict[str, Path]) -> None:
    tls = {
        "cert_file": str(tls_files["cert"]),
        "key_file": str(tls_files["key"]),
        "cipher_suites": ["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"],
    }
    _, context = load_web_config(str(write(tmp_path / "web.yml", {"tls_server_config": tls})))
    assert context is not None
    tls12 = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 == {"ECDHE-ECDSA-AES256-GCM-SHA384"}


def test_client_ca_without_certificates(tmp_path: Path, tls_files: dict[str, Path]) -> None:
    empty = tmp_path / "empty-ca.pem"
    empty.write_text("not a certificate\n")
    tls = {
        "cert_file": str(tls_files["cert"]),
        "key_file": str(tls_files["key"]),
        "client_auth_type": "RequireAndVerifyClientCert",
        "client_ca_file": str(empty),
    }
    (problem,) = problems_of(tmp_path, {"tls_server_config": tls})
    assert problem.startswith(f"tls_server_config.client_ca_file: cannot load {empty}: ")


def test_bad_password_hash_is_not_echoed(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, {"basic_auth_users": {"alice": "plaintext-password"}})
    assert problems == [
        "basic_auth_users.alice: is not a bcrypt hash (make one with htpasswd -nBC 10)"
    ]
    assert "plaintext-password" not in str(problems)


def test_yaml_errors_do_not_echo_the_file(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path, "basic_auth_users:\n  alice: 'TopSecretHash\n  bob: [\n")
    assert problem.startswith("invalid YAML: line ")
    assert "TopSecret" not in problem


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-Powered-By": "me"}, "http_server_config.headers.X-Powered-By: this header cannot"),
        ({"X-Frame-Options": "allow"}, "http_server_config.headers.X-Frame-Options: invalid value"),
        ({"X-Content-Type-Options": "sniff"}, "http_server_config.headers.X-Content-Type-Options"),
    ],
)
def test_header_validation(tmp_path: Path, headers: dict[str, str], expected: str) -> None:
    problems = problems_of(tmp_path, {"http_server_config": {"headers": headers}})
    assert any(p.startswith(expected) for p in problems), problems


def test_user_names_with_colons_are_refused(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, {"basic_auth_users": {"a:b": bcrypt_hash("x")}})
    assert problems == ["basic_auth_users.a:b: a user name cannot contain ':'"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WebConfigError, match="cannot read the file"):
        load_web_config(str(tmp_path / "absent.yml"))


@pytest.mark.parametrize(
    ("rate_limit", "expected"),
    [
        ({"interval": "soon", "burst": 1}, "rate_limit.interval: invalid duration"),
        ({"interval": "1s", "burst": 0}, "rate_limit.burst: must be at least 1"),
        ({"interval": "1s", "burst": -3}, "rate_limit.burst: must be a whole number"),
    ],
)
def test_rate_limit_validation(tmp_path: Path, rate_limit: dict[str, Any], expected: str) -> None:
    problems = problems_of(tmp_path, {"rate_limit": rate_limit})
    assert any(p.startswith(expected) for p in problems), problems


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("250ms", 0.25), ("1m30s", 90.0), ("1.5h", 5400.0), ("0", 0.0), (0, 0.0)],
)
def test_go_durations(text: object, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


def test_users_are_not_in_reprs() -> None:
    hashed = bcrypt_hash("pw")
    config = parse_web_config(yaml.safe_dump({"basic_auth_users": {"alice": hashed}}))
    assert hashed not in repr(config)
    assert config.users == {"alice": hashed}
