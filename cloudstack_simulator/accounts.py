"""Domains, accounts and users of the simulator, their keys and their login sessions.

The defaults are deterministic (fixed UUIDs and keys, documented in README.md) so tests and the
demo can rely on them; a YAML or JSON file can replace them.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_NAMESPACE = uuid.UUID("2f7e2a60-5f3c-4c1e-9a8e-0c1d5e6f7a80")

# CloudStack's account types (Account.Type ordinals).
NORMAL = 0
ROOT_ADMIN = 1
DOMAIN_ADMIN = 2
_TYPES = {"user": NORMAL, "admin": ROOT_ADMIN, "domainadmin": DOMAIN_ADMIN}


def stable_uuid(kind: str, name: str) -> str:
    """The same UUID for the same thing on every run."""
    return str(uuid.uuid5(_NAMESPACE, f"{kind}:{name}"))


class AccountsError(ValueError):
    """An accounts file that cannot be used; the message names the entry."""


@dataclass(eq=False)
class Domain:
    uuid: str
    name: str
    path: str  # CloudStack's form: "/" for ROOT, "/Ops/" below it
    parent: Domain | None

    @property
    def display_path(self) -> str:
        """`domainpath` as responses show it: ROOT, ROOT/Ops."""
        return "ROOT" + self.path.rstrip("/") if self.path != "/" else "ROOT"

    def contains(self, other: Domain) -> bool:
        return other.path.startswith(self.path)


@dataclass(eq=False)
class Account:
    uuid: str
    name: str
    domain: Domain
    type: int
    internal_id: int
    enabled: bool = True

    @property
    def is_root_admin(self) -> bool:
        return self.type == ROOT_ADMIN

    def __repr__(self) -> str:
        return f"Account({self.name!r} in {self.domain.path!r})"

    def java_str(self) -> str:
        """How CloudStack's messages print an account."""
        return f"Acct[{self.uuid}-{self.name}]"


@dataclass(eq=False)
class User:
    uuid: str
    username: str
    account: Account
    password: str = field(repr=False)
    api_key: str | None = field(repr=False)
    secret_key: str | None = field(repr=False)
    enabled: bool = True


@dataclass
class Session:
    session_id: str = field(repr=False)
    session_key: str = field(repr=False)
    user: User
    created: float


DEFAULT_ACCOUNTS: list[dict[str, Any]] = [
    {
        "account": "admin",
        "domain": "/",
        "type": "admin",
        "username": "admin",
        "password": "password",
        "api_key": "sim-admin-api-key",
        "secret_key": "sim-admin-secret-key",
    },
    {
        "account": "ops",
        "domain": "/Ops",
        "type": "user",
        "username": "ops",
        "password": "ops-password",
        "api_key": "sim-ops-api-key",
        "secret_key": "sim-ops-secret-key",
    },
    {
        "account": "dev",
        "domain": "/Dev",
        "type": "user",
        "username": "dev",
        "password": "dev-password",
        "api_key": "sim-dev-api-key",
        "secret_key": "sim-dev-secret-key",
    },
]


def normalise_path(path: str) -> str:
    """ "Ops", "/Ops", "ROOT/Ops", "/Ops/" -> "/Ops/" (the form CloudStack stores)."""
    text = path.strip().strip("/")
    if text.upper() == "ROOT":
        text = ""
    elif text.upper().startswith("ROOT/"):
        text = text[5:]
    return "/" + (text + "/" if text else "")


class Directory:
    """Every domain, account and user, with lookups by key, name and login."""

    def __init__(self, entries: Iterable[Mapping[str, Any]] = DEFAULT_ACCOUNTS) -> None:
        self.domains: dict[str, Domain] = {}  # by path
        self.accounts: list[Account] = []
        self.users: list[User] = []
        self._by_key: dict[str, User] = {}
        self.sessions: dict[str, Session] = {}  # by session id
        self._domain("/")
        for index, entry in enumerate(entries):
            self._add(index, entry)
        if not self.users:
            raise AccountsError("accounts: at least one account is needed")

    def _domain(self, path: str) -> Domain:
        path = normalise_path(path)
        found = self.domains.get(path)
        if found is not None:
            return found
        if path == "/":
            domain = Domain(stable_uuid("domain", "/"), "ROOT", "/", None)
        else:
            parent = self._domain(path.rstrip("/").rpartition("/")[0] or "/")
            name = path.rstrip("/").rpartition("/")[2]
            domain = Domain(stable_uuid("domain", path), name, path, parent)
        self.domains[path] = domain
        return domain

    def _add(self, index: int, entry: Mapping[str, Any]) -> None:
        where = f"accounts[{index}]"
        if not isinstance(entry, Mapping):
            raise AccountsError(f"{where}: expected a mapping")
        known = {"account", "domain", "type", "username", "password", "api_key", "secret_key"}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise AccountsError(f"{where}: unknown keys {', '.join(map(str, unknown))}")
        name = entry.get("account")
        if not isinstance(name, str) or not name:
            raise AccountsError(f"{where}.account: a name is required")
        kind = entry.get("type", "user")
        if kind not in _TYPES:
            raise AccountsError(f"{where}.type: one of {', '.join(_TYPES)}")
        for key in ("domain", "username", "password", "api_key", "secret_key"):
            value = entry.get(key)
            if value is not None and not isinstance(value, str):
                raise AccountsError(f"{where}.{key}: expected a string")
        domain = self._domain(entry.get("domain") or "/")
        account = self.find_account(name, domain)
        if account is None:
            account = Account(
                uuid=stable_uuid("account", domain.path + name),
                name=name,
                domain=domain,
                type=_TYPES[kind],
                internal_id=len(self.accounts) + 2,  # 1 is CloudStack's system account
            )
            self.accounts.append(account)
        username = entry.get("username") or name
        if any(u.username == username and u.account.domain is domain for u in self.users):
            raise AccountsError(f"{where}.username: {username!r} already exists in that domain")
        api_key, secret_key = entry.get("api_key"), entry.get("secret_key")
        if (api_key is None) != (secret_key is None):
            raise AccountsError(f"{where}: api_key and secret_key go together")
        if api_key is not None and api_key in self._by_key:
            raise AccountsError(f"{where}.api_key: used twice")
        user = User(
            uuid=stable_uuid("user", domain.path + username),
            username=username,
            account=account,
            password=entry.get("password") or "",
            api_key=api_key,
            secret_key=secret_key,
        )
        self.users.append(user)
        if api_key is not None:
            self._by_key[api_key] = user

    def find_account(self, name: str, domain: Domain) -> Account | None:
        for account in self.accounts:
            if account.name == name and account.domain is domain:
                return account
        return None

    def account_by_ref(self, ref: str) -> Account | None:
        """An account by UUID, `name`, or `name@/Domain/path`."""
        name, _, path = ref.partition("@")
        for account in self.accounts:
            if account.uuid == ref:
                return account
        if path:
            domain = self.domains.get(normalise_path(path))
            return self.find_account(name, domain) if domain else None
        matches = [a for a in self.accounts if a.name == name]
        return matches[0] if len(matches) == 1 else None

    def domain_by_uuid(self, domain_id: str) -> Domain | None:
        for domain in self.domains.values():
            if domain.uuid == domain_id:
                return domain
        return None

    def user_by_key(self, api_key: str) -> User | None:
        return self._by_key.get(api_key)

    def first_user(self, account: Account) -> User:
        for user in self.users:
            if user.account is account:
                return user
        raise LookupError("account without a user")  # cannot happen: every entry adds a user

    def revoke_key(self, api_key: str) -> bool:
        user = self._by_key.pop(api_key, None)
        if user is None:
            return False
        user.api_key = user.secret_key = None
        return True

    def authenticate(self, username: str, password: str, domain_path: str) -> User | None:
        domain = self.domains.get(normalise_path(domain_path or "/"))
        if domain is None:
            return None
        for user in self.users:
            if (
                user.username == username
                and user.account.domain is domain
                and user.password
                and secrets.compare_digest(user.password.encode(), password.encode())
            ):
                return user
        return None

    def new_session(self, user: User, now: float) -> Session:
        session = Session(
            session_id=secrets.token_hex(16).upper(),
            session_key=secrets.token_urlsafe(20),
            user=user,
            created=now,
        )
        self.sessions[session.session_id] = session
        return session

    def expire_sessions(self) -> int:
        count = len(self.sessions)
        self.sessions.clear()
        return count

    def describe(self) -> list[dict[str, Any]]:
        """The accounts as the control API shows them (no passwords or secret keys)."""
        return [
            {
                "account": a.name,
                "accountid": a.uuid,
                "domain": a.domain.path,
                "domainid": a.domain.uuid,
                "type": {v: k for k, v in _TYPES.items()}[a.type],
                "users": [
                    {"username": u.username, "userid": u.uuid, "has_keys": u.api_key is not None}
                    for u in self.users
                    if u.account is a
                ],
            }
            for a in self.accounts
        ]


def load_accounts(path: str) -> Directory:
    """Read an accounts file: YAML or JSON, a list of entries or {"accounts": [...]}."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise AccountsError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise AccountsError(f"{path}: not valid YAML/JSON: {str(exc).splitlines()[0]}") from None
    if isinstance(data, Mapping):
        data = data.get("accounts")
    if not isinstance(data, list):
        raise AccountsError(f"{path}: expected a list of accounts (or an 'accounts' key)")
    return Directory(data)
